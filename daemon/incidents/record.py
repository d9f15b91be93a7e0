"""The decision record: one frozen, typed value per incident, and its one JSON form.

``incidents.read.build_record`` builds it from the store, once per transaction
that changes the incident (``incidents.write``) or reads it. Every stage that
speaks about an incident consumes this type as is: the API returns
``to_json()``; each outbox notification carries ``to_json()`` and the notifiers
parse it back with ``from_json`` (``notify.notice``); the CLI parses the API's
answer with ``from_json``; tests build records through the real incident path.

``SCHEMA_VERSION`` is written into the JSON. Version 2 added ``actions`` (what
the rollback did to each target) and ``verification``; ``from_json`` reads
version 1 (outbox rows queued before an upgrade) with those empty, and ignores
fields a later version may add, so a replica mid-upgrade still delivers.
Approval codes never reach the record: the store does not hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import orjson

from daemon.incidents.state import State, iso, parse_dt
from daemon.model import Decision, Severity

SCHEMA_VERSION = 2


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, slots=True)
class AlertEntry:
    fingerprint: str
    name: str
    status: str
    value: float | None
    starts_at: datetime
    at: datetime
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # What the alert said and where it came from (the incident page shows both); empty in older records.
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    generator_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "name": self.name, "status": self.status, "value": self.value,
            "starts_at": self.starts_at.isoformat(), "at": self.at.isoformat(), "labels": dict(self.labels),
            "annotations": dict(self.annotations), "generator_url": self.generator_url,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AlertEntry:
        return cls(
            d["fingerprint"], d["name"], d["status"], d.get("value"), datetime.fromisoformat(d["starts_at"]),
            datetime.fromisoformat(d["at"]), _frozen(d.get("labels")), _frozen(d.get("annotations")),
            str(d.get("generator_url") or ""),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ApprovalEntry:
    """One verdict: ``approve`` counts for ``role``; ``reject`` ended the incident."""

    approver: str
    role: str
    verdict: str  # approve | reject
    via: str
    at: datetime
    comment: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "approver": self.approver, "role": self.role, "verdict": self.verdict, "via": self.via,
            "at": self.at.isoformat(), "comment": self.comment,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ApprovalEntry:
        at = datetime.fromisoformat(d["at"])
        return cls(d["approver"], d["role"], d["verdict"], d["via"], at, d.get("comment", ""))


@dataclass(frozen=True, slots=True)
class ActionEntry:
    """What the rollback did to one target (``result`` is a ``TargetResult`` value)."""

    target: str
    result: str
    from_revision: int | None = None
    to_revision: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "result": self.result, "from": self.from_revision, "to": self.to_revision,
            "detail": self.detail,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ActionEntry:
        return cls(d["target"], d["result"], d.get("from"), d.get("to"), d.get("detail", ""))


@dataclass(frozen=True, slots=True)
class Verification:
    """The check after the rollback: whether it held, and what it measured."""

    # Not "passed": the outbox's redaction treats keys like "pass…" as secrets.
    ok: bool
    detail: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verification:
        return cls(bool(d["ok"]), str(d.get("detail", "")), datetime.fromisoformat(d["at"]))


@dataclass(frozen=True, slots=True)
class TimerEntry:
    kind: str
    due_at: datetime
    status: str  # pending | fired | cancelled

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "due_at": self.due_at.isoformat(), "status": self.status}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TimerEntry:
        return cls(d["kind"], datetime.fromisoformat(d["due_at"]), d["status"])


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    actor: str
    action: str
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "action": self.action, "detail": dict(self.detail)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TimelineEntry:
        return cls(datetime.fromisoformat(d["at"]), d["actor"], d["action"], _frozen(d.get("detail")))


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One incident's decision record: the rule and why, alerts, verdicts, actions, verification, timeline."""

    id: str
    state: State
    open: bool
    decision: Decision
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    escalations: int = 0
    objective_breached: bool = False
    # ``Incident.missing_roles()``: approvals the quorum still needs; empty once it is met.
    missing_roles: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    alerts: tuple[AlertEntry, ...] = ()
    approvals: tuple[ApprovalEntry, ...] = ()
    actions: tuple[ActionEntry, ...] = ()
    verification: Verification | None = None
    timers: tuple[TimerEntry, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()  # empty in lists: only one incident's page carries it
    # ``json_bytes``' answer once it was asked for: no part of the value (not compared, not copied by
    # ``dataclasses.replace``). A record never changes, and the reader's memo hands the same record to
    # every page that shows the incident unchanged, so a page of 1,000 is serialized once (issue 19).
    _json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def rule(self) -> str:
        return self.decision.rule

    @property
    def severity(self) -> Severity:
        return self.decision.severity

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(str(t) for t in self.decision.targets)

    @property
    def awaiting_approval(self) -> bool:
        return self.open and self.state is State.AWAITING_APPROVAL

    def verdicts(self, verdict: str) -> tuple[ApprovalEntry, ...]:
        return tuple(a for a in self.approvals if a.verdict == verdict)

    def timer(self, kind: str) -> TimerEntry | None:
        return next((t for t in self.timers if t.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "state": self.state.value,
            "open": self.open,
            # Top-level copies of the decision's rule and severity, kept for readers of version 1.
            "rule": self.rule,
            "severity": self.severity.value,
            "decision": self.decision.to_json(),
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "closed_at": iso(self.closed_at),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": iso(self.acknowledged_at),
            "escalations": self.escalations,
            "objective_breached": self.objective_breached,
            "missing_roles": dict(self.missing_roles),
            "alerts": [a.to_json() for a in self.alerts],
            "approvals": [a.to_json() for a in self.approvals],
            "actions": [a.to_json() for a in self.actions],
            "verification": self.verification.to_json() if self.verification else None,
            "timers": [t.to_json() for t in self.timers],
            "timeline": [t.to_json() for t in self.timeline],
        }

    def json_bytes(self) -> bytes:
        """``to_json()`` as JSON (orjson), serialized on the first call only."""
        if self._json is None:
            object.__setattr__(self, "_json", orjson.dumps(self.to_json()))  # frozen, but a cache of itself
        assert self._json is not None  # noqa: S101 - set just above
        return self._json

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IncidentRecord:
        """The record ``to_json`` wrote (any version up to this one); KeyError/ValueError if it is not one."""
        verification = d.get("verification")
        return cls(
            id=d["id"],
            state=State(d["state"]),
            open=bool(d["open"]),
            decision=Decision.from_json(d["decision"]),
            opened_at=datetime.fromisoformat(d["opened_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
            closed_at=parse_dt(d.get("closed_at")),
            acknowledged_by=d.get("acknowledged_by"),
            acknowledged_at=parse_dt(d.get("acknowledged_at")),
            escalations=int(d.get("escalations", 0)),
            objective_breached=bool(d.get("objective_breached", False)),
            missing_roles=_frozen(d.get("missing_roles")),
            alerts=tuple(AlertEntry.from_json(a) for a in d.get("alerts", ())),
            approvals=tuple(ApprovalEntry.from_json(a) for a in d.get("approvals", ())),
            actions=tuple(ActionEntry.from_json(a) for a in d.get("actions", ())),
            verification=Verification.from_json(verification) if verification else None,
            timers=tuple(TimerEntry.from_json(t) for t in d.get("timers", ())),
            timeline=tuple(TimelineEntry.from_json(t) for t in d.get("timeline", ())),
        )
