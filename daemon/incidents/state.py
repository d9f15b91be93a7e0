"""The incident as a persisted value: its states, its approvals, and what its quorum still needs.

``machine`` turns (incident, event) into a new ``Incident``; ``repo`` stores it
as JSON in the incident row; ``record`` reads ``missing_roles`` from it for the
decision record. Plain frozen values, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from daemon.model import ActionKind, Decision, QuorumMode, Severity

MANUAL_RULE = "manual-rollback"


class State(enum.StrEnum):
    OPEN = "open"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    ROLLING_BACK = "rolling_back"
    VERIFYING = "verifying"
    RESOLVED = "resolved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    ESCALATED = "escalated"


TERMINAL = frozenset({State.RESOLVED, State.REJECTED, State.EXPIRED, State.FAILED})
# States where no action has started yet: the incident ends if its alerts clear.
PRE_ACTION = frozenset({State.OPEN, State.AWAITING_APPROVAL, State.ESCALATED})


@dataclass(frozen=True, slots=True)
class Policy:
    """How long to wait for an acknowledgement before re-paging, by severity, and how often."""

    escalate_after_s: Mapping[Severity, float] = field(
        default_factory=lambda: MappingProxyType(
            {Severity.P0: 300.0, Severity.P1: 900.0, Severity.P2: 1800.0, Severity.P3: 3600.0}
        )
    )
    max_escalations: int = 3


@dataclass(frozen=True, slots=True)
class Vote:
    """One approver's approval, for one role."""

    approver: str
    role: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Incident:
    """The persisted state of one incident; every transition returns a new value."""

    id: str
    decision: Decision
    state: State
    opened_at: datetime
    updated_at: datetime
    firing: frozenset[str] = frozenset()
    approvals: tuple[Vote, ...] = ()
    rejected_by: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    escalations: int = 0
    objective_breached: bool = False
    closed_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.state not in TERMINAL

    @property
    def action_pending(self) -> bool:
        """A rollback the decision asks for has not started yet."""
        return self.decision.action in (ActionKind.ROLLBACK_NOW, ActionKind.ROLLBACK_WITHIN)

    def missing_roles(self) -> dict[str, int]:
        """Role → approvals still needed before the quorum is met; empty once it is.

        The one meaning every reader uses (the machine, the record, Slack, the CLI):
        for ``all_of`` each role's shortfall; for ``any_of`` every role's shortfall
        until one role is covered, since any one of them would do.
        """
        have: dict[str, int] = {}
        for v in self.approvals:
            have[v.role] = have.get(v.role, 0) + 1
        roles = self.decision.approval.roles
        short = {r: n - have.get(r, 0) for r, n in roles.items() if have.get(r, 0) < n}
        if self.decision.approval.mode is QuorumMode.ANY_OF and len(short) < len(roles):
            return {}
        return short

    def quorum_met(self) -> bool:
        return not self.missing_roles()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "decision": self.decision.to_json(),
            "state": self.state.value,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "firing": sorted(self.firing),
            "approvals": [{"approver": v.approver, "role": v.role, "at": v.at.isoformat()} for v in self.approvals],
            "rejected_by": self.rejected_by,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": iso(self.acknowledged_at),
            "escalations": self.escalations,
            "objective_breached": self.objective_breached,
            "closed_at": iso(self.closed_at),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Incident:
        return cls(
            id=d["id"],
            decision=Decision.from_json(d["decision"]),
            state=State(d["state"]),
            opened_at=datetime.fromisoformat(d["opened_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
            firing=frozenset(d.get("firing", ())),
            approvals=tuple(
                Vote(a["approver"], a["role"], datetime.fromisoformat(a["at"])) for a in d.get("approvals", ())
            ),
            rejected_by=d.get("rejected_by"),
            acknowledged_by=d.get("acknowledged_by"),
            acknowledged_at=parse_dt(d.get("acknowledged_at")),
            escalations=int(d.get("escalations", 0)),
            objective_breached=bool(d.get("objective_breached", False)),
            closed_at=parse_dt(d.get("closed_at")),
        )


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
