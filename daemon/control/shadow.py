"""Shadow mode: which decisions only watch, and the report that is the evidence to promote a rule.

Part of automation control. A decision is shadow when its rule says
``mode: shadow`` (``rules``) or when one of its targets lives in a namespace
the configuration lists under ``control.shadow_namespaces``; ``as_configured``
applies that override as the pipeline hands the decision to the incidents, so
every notification of the incident is labelled SHADOW from its opening on.

``shadow_report`` reads back the holds the shadow guard recorded: per rule,
how often it would have rolled back, what it would have done (the API
server's dry run), and how its incidents ended — resolved without the
rollback, still open, or otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from daemon.control.hold import SHADOW
from daemon.model import Decision
from daemon.store.db import Store
from daemon.store.tables import HoldRow, IncidentRow


def as_configured(decision: Decision, shadow_namespaces: Collection[str]) -> Decision:
    """``decision``, in shadow mode when any of its targets is in a shadow namespace."""
    if decision.shadow or not any(t.namespace in shadow_namespaces for t in decision.targets):
        return decision
    return replace(decision, shadow=True)


@dataclass
class RuleShadow:
    """One shadow rule's record over the report's period."""

    rule: str
    would_roll_back: int = 0
    resolved_without: int = 0
    still_open: int = 0
    other: int = 0
    targets: Counter[str] = field(default_factory=Counter)
    last: str = ""  # the latest "would roll back …" sentence
    incidents: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "would_roll_back": self.would_roll_back,
            "resolved_without_rollback": self.resolved_without,
            "still_open": self.still_open,
            "other": self.other,
            "targets": dict(self.targets),
            "last": self.last,
            "incidents": self.incidents[-20:],
        }


async def shadow_report(store: Store, since: datetime) -> list[RuleShadow]:
    """Every shadow rule that decided since ``since``, by rule name."""
    query = (
        select(HoldRow, IncidentRow.state)
        .join(IncidentRow, IncidentRow.id == HoldRow.incident_id)
        .where(HoldRow.guard == SHADOW, HoldRow.at >= since)
        .order_by(HoldRow.at, HoldRow.id)
    )
    rules: dict[str, RuleShadow] = {}
    async with store.transaction("shadow report") as s:
        rows = (await s.execute(query)).all()
    for hold, state in rows:
        r = rules.setdefault(hold.rule, RuleShadow(hold.rule))
        r.would_roll_back += 1
        if state == "resolved":
            r.resolved_without += 1
        elif state in ("open", "escalated", "awaiting_approval"):
            r.still_open += 1
        else:
            r.other += 1
        for t in hold.would.get("targets", ()):
            r.targets[str(t)] += 1
        r.last = hold.detail
        r.incidents.append(hold.incident_id)
    return sorted(rules.values(), key=lambda r: r.rule)
