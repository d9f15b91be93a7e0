"""The decision-rule index: candidates for an alert in rule order, without scanning every rule.

Each rule is filed under one key: its ``alertname`` equality (or a regex that
is a plain alternation of names), else its first label equality, else the
short unindexed list. A lookup touches the alert's own labels, so the cost per
alert grows with the rules that can match it, not with the size of the set.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence

from daemon.rules.compiled import CompiledDecision
from daemon.rules.matchers import Op

_LITERAL_ALTERNATION = re.compile(r"^[A-Za-z0-9_:]+(\|[A-Za-z0-9_:]+)*$")


def _keys(rule: CompiledDecision) -> list[tuple[str, str]] | None:
    """The index keys of ``rule`` (any one must hold for it to match), or None when unindexable."""
    for m in rule.matchers:
        if m.label == "alertname" and m.op is Op.EQ:
            return [("alertname", m.value)]
    for m in rule.matchers:
        if m.label == "alertname" and m.op is Op.RE and _LITERAL_ALTERNATION.match(m.value):
            return [("alertname", name) for name in sorted(set(m.value.split("|")))]
    for m in rule.matchers:
        # An empty value also matches a missing label, which no lookup key would find.
        if m.op is Op.EQ and m.value:
            return [(m.label, m.value)]
    return None


class RuleIndex:
    """Maps (label, value) → rules in order; ``candidates`` merges the buckets an alert hits."""

    def __init__(self, rules: Sequence[CompiledDecision]) -> None:
        buckets: dict[tuple[str, str], list[CompiledDecision]] = {}
        unindexed: list[CompiledDecision] = []
        for rule in sorted(rules, key=lambda r: r.order):
            keys = _keys(rule)
            if keys is None:
                unindexed.append(rule)
                continue
            for key in keys:
                buckets.setdefault(key, []).append(rule)
        self._buckets = {k: tuple(v) for k, v in buckets.items()}
        self._labels = frozenset(k for k, _ in buckets)
        self._unindexed = tuple(unindexed)

    @property
    def unindexed(self) -> tuple[CompiledDecision, ...]:
        return self._unindexed

    def candidates(self, labels: Mapping[str, str]) -> Iterable[CompiledDecision]:
        """Rules that may match ``labels`` (which include ``alertname``), in rule order."""
        hits: list[tuple[CompiledDecision, ...]] = []
        for label, value in labels.items():
            if label in self._labels:
                bucket = self._buckets.get((label, value))
                if bucket:
                    hits.append(bucket)
        if self._unindexed:
            hits.append(self._unindexed)
        if not hits:
            return ()
        if len(hits) == 1:
            return hits[0]
        return _unique(heapq.merge(*hits, key=lambda r: r.order))


def _unique(rules: Iterable[CompiledDecision]) -> Iterable[CompiledDecision]:
    last = -1
    for rule in rules:
        if rule.order != last:
            last = rule.order
            yield rule
