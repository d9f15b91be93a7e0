"""What a pause or a freeze window covers: everything, a namespace, one workload or one rule.

Bottom layer, beside ``daemon.target``. ``control.pauses`` stores a scope with
each pause, and the rule files give one to each freeze window
(``rules.schema``); both ask ``covers`` whether a decision falls under it, so
a pause and a window scoped the same way cover the same decisions.

Written forms (the CLI's flags and the rule files' keys): ``all``,
``namespace:NS``, ``deployment:NS/NAME`` (any spelling ``Target.parse``
reads) and ``rule:NAME``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.target import Target


class ScopeKind(enum.StrEnum):
    ALL = "all"
    NAMESPACE = "namespace"
    DEPLOYMENT = "deployment"
    RULE = "rule"


@dataclass(frozen=True, slots=True)
class Scope:
    """One scope; ``value`` is empty for ``all``, else the namespace, the target or the rule name."""

    kind: ScopeKind
    value: str = ""

    def __post_init__(self) -> None:
        if (self.kind is ScopeKind.ALL) != (not self.value):
            raise ValueError(f"scope {self.kind.value!r} " + ("takes no value" if self.value else "needs a value"))
        if self.kind is ScopeKind.DEPLOYMENT and "/" not in self.value:
            raise ValueError(f"deployment scope {self.value!r}: expected NAMESPACE/NAME")

    def covers(self, rule: str, targets: Sequence[Target]) -> bool:
        """Whether a decision of ``rule`` for ``targets`` falls under this scope."""
        if self.kind is ScopeKind.ALL:
            return True
        if self.kind is ScopeKind.RULE:
            return rule == self.value
        if self.kind is ScopeKind.NAMESPACE:
            return any(t.namespace == self.value for t in targets)
        wanted = Target.parse(self.value)
        return any(t == wanted for t in targets)

    def __str__(self) -> str:
        return self.kind.value if self.kind is ScopeKind.ALL else f"{self.kind.value}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``all`` or ``KIND:VALUE``; ValueError naming what was expected otherwise."""
        kind, _, value = text.strip().partition(":")
        try:
            return cls(ScopeKind(kind), value.strip())
        except ValueError as exc:
            if kind not in ScopeKind.__members__.values():
                raise ValueError(
                    f"unknown scope {text!r}: expected all, namespace:NS, deployment:NS/NAME or rule:NAME"
                ) from None
            raise ValueError(str(exc)) from None
