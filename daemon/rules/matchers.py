"""Alertmanager-style label matchers (``=``, ``!=``, ``=~``, ``!~``) for decision rules.

Parsed once at load; regexes are anchored as in Alertmanager. ``alertname``
matches the alert's name. ``contradiction`` finds matcher sets that can never
match (for ``rules check``) and ``implies`` finds rules shadowed by an earlier one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$')


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    """``label op value``; a missing label reads as the empty string, as in Alertmanager."""

    label: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op is Op.EQ:
            return actual == self.value
        if self.op is Op.NE:
            return actual != self.value
        assert self._regex is not None  # noqa: S101 - parse() always sets it for regex ops
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op is Op.RE else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op.value}"{escaped}"'


def parse(text: str) -> Matcher:
    """``'severity=~"critical|page"'`` → Matcher; raises ValueError saying what is wrong."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError('expected a matcher like alertname="ServiceDown", team!="qa" or env=~"prod|staging"')
    label, op_text, quoted, bare = found.groups()
    value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    op = Op(op_text)
    regex = None
    if op in (Op.RE, Op.NRE):
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
    return Matcher(label, op, value, regex)


def contradiction(matchers: Sequence[Matcher]) -> str | None:
    """Why no label set can satisfy all ``matchers`` together, or None if some can."""
    by_label: dict[str, list[Matcher]] = {}
    for m in matchers:
        by_label.setdefault(m.label, []).append(m)
    for label, group in by_label.items():
        equal = {m.value for m in group if m.op is Op.EQ}
        if len(equal) > 1:
            return f"{label} cannot equal both " + " and ".join(repr(v) for v in sorted(equal))
        if not equal:
            continue
        value = equal.pop()
        for m in group:
            if m.op is not Op.EQ and not m.matches({label: value}):
                return f'{label}="{value}" contradicts {m}'
    return None


def implies(general: Sequence[Matcher], specific: Sequence[Matcher]) -> bool:
    """True if every label set matching ``specific`` also matches ``general`` (syntactic, conservative)."""
    spec = set(specific)
    equal = {m.label: m.value for m in specific if m.op is Op.EQ}
    for m in general:
        if m in spec:
            continue
        if m.label in equal and m.matches({m.label: equal[m.label]}):
            continue
        return False
    return True
