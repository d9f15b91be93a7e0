"""The decision record: everything an incident review needs, as one frozen value.

``IncidentService`` builds an ``IncidentView`` from the store: the rule that
matched and why, the alerts with their measured values, the correlated deploy,
approvals, rejections and acknowledgements, each action with its result, the
timers, and the audit timeline. The API returns ``to_json()``; notifications
carry it; the CLI renders it with ``render_timeline``. Approval codes never
reach it: the store does not hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True, slots=True)
class AlertEntry:
    fingerprint: str
    name: str
    status: str
    value: float | None
    starts_at: datetime
    at: datetime
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ApprovalEntry:
    approver: str
    role: str
    verdict: str  # approve | reject
    via: str
    at: datetime
    comment: str = ""


@dataclass(frozen=True, slots=True)
class TimerEntry:
    kind: str
    due_at: datetime
    status: str  # pending | fired | cancelled


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    actor: str
    action: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IncidentView:
    """One incident's decision record."""

    id: str
    state: str
    open: bool
    decision: Mapping[str, Any]
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    escalations: int = 0
    objective_breached: bool = False
    missing_roles: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    alerts: tuple[AlertEntry, ...] = ()
    approvals: tuple[ApprovalEntry, ...] = ()
    timers: tuple[TimerEntry, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()

    @property
    def rule(self) -> str:
        return str(self.decision.get("rule", ""))

    @property
    def severity(self) -> str:
        return str(self.decision.get("severity", ""))

    @property
    def actions(self) -> tuple[TimelineEntry, ...]:
        """Each action rollbackd took on the cluster, with its result."""
        return tuple(t for t in self.timeline if t.action in ("rollback_started", "rollback_finished"))

    def timer(self, kind: str) -> TimerEntry | None:
        return next((t for t in self.timers if t.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "open": self.open,
            "rule": self.rule,
            "severity": self.severity,
            "decision": dict(self.decision),
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "closed_at": _iso(self.closed_at),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _iso(self.acknowledged_at),
            "escalations": self.escalations,
            "objective_breached": self.objective_breached,
            "missing_roles": dict(self.missing_roles),
            "alerts": [
                {
                    "fingerprint": a.fingerprint,
                    "name": a.name,
                    "status": a.status,
                    "value": a.value,
                    "starts_at": a.starts_at.isoformat(),
                    "at": a.at.isoformat(),
                    "labels": dict(a.labels),
                }
                for a in self.alerts
            ],
            "approvals": [
                {
                    "approver": a.approver,
                    "role": a.role,
                    "verdict": a.verdict,
                    "via": a.via,
                    "at": a.at.isoformat(),
                    "comment": a.comment,
                }
                for a in self.approvals
            ],
            "timers": [{"kind": t.kind, "due_at": t.due_at.isoformat(), "status": t.status} for t in self.timers],
            "timeline": [
                {"at": t.at.isoformat(), "actor": t.actor, "action": t.action, "detail": dict(t.detail)}
                for t in self.timeline
            ],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IncidentView:
        return cls(
            id=d["id"],
            state=d["state"],
            open=bool(d["open"]),
            decision=MappingProxyType(dict(d.get("decision", {}))),
            opened_at=datetime.fromisoformat(d["opened_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
            closed_at=_dt(d.get("closed_at")),
            acknowledged_by=d.get("acknowledged_by"),
            acknowledged_at=_dt(d.get("acknowledged_at")),
            escalations=int(d.get("escalations", 0)),
            objective_breached=bool(d.get("objective_breached", False)),
            missing_roles=MappingProxyType(dict(d.get("missing_roles", {}))),
            alerts=tuple(
                AlertEntry(
                    a["fingerprint"],
                    a["name"],
                    a["status"],
                    a.get("value"),
                    datetime.fromisoformat(a["starts_at"]),
                    datetime.fromisoformat(a["at"]),
                    MappingProxyType(dict(a.get("labels", {}))),
                )
                for a in d.get("alerts", ())
            ),
            approvals=tuple(
                ApprovalEntry(
                    a["approver"],
                    a["role"],
                    a["verdict"],
                    a["via"],
                    datetime.fromisoformat(a["at"]),
                    a.get("comment", ""),
                )
                for a in d.get("approvals", ())
            ),
            timers=tuple(
                TimerEntry(t["kind"], datetime.fromisoformat(t["due_at"]), t["status"]) for t in d.get("timers", ())
            ),
            timeline=tuple(
                TimelineEntry(datetime.fromisoformat(t["at"]), t["actor"], t["action"], MappingProxyType(t["detail"]))
                for t in d.get("timeline", ())
            ),
        )


# --- rendering for the CLI -----------------------------------------------------------------------

_STATE_STYLE = {"resolved": "green", "failed": "red", "escalated": "bold red", "awaiting_approval": "yellow"}


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def render_list(views: list[IncidentView]) -> Table:
    table = Table(title="incidents", show_lines=False)
    for col in ("id", "state", "severity", "rule", "targets", "opened", "ack"):
        table.add_column(col)
    for v in views:
        table.add_row(
            v.id,
            Text(v.state, style=_STATE_STYLE.get(v.state, "")),
            v.severity,
            v.rule,
            ", ".join(v.decision.get("targets", [])),
            _when(v.opened_at),
            v.acknowledged_by or "-",
        )
    return table


def render_timeline(v: IncidentView) -> RenderableType:
    """The decision record as a readable page: header, alerts, approvals, then the timeline."""
    d = v.decision
    head = Text()
    head.append(f"incident {v.id}  ", style="bold")
    head.append(v.state, style=_STATE_STYLE.get(v.state, "bold"))
    head.append(f"  {v.severity}  rule {v.rule}\n")
    head.append(f"action: {d.get('action')}  targets: {', '.join(d.get('targets', []))}\n")
    if d.get("reason"):
        head.append(f"why: {d['reason']}\n")
    if d.get("measured"):
        head.append("measured: " + ", ".join(f"{k}={val:g}" for k, val in d["measured"].items()) + "\n")
    if d.get("deploy"):
        dep = d["deploy"]
        head.append(f"deploy: {dep.get('service')} {dep.get('version') or dep.get('image')} at {dep.get('at')}\n")
    if v.missing_roles and v.open:
        head.append("waiting for: " + ", ".join(f"{n}x {r}" for r, n in v.missing_roles.items()) + "\n")
    if v.acknowledged_by:
        head.append(f"acknowledged by {v.acknowledged_by} at {_when(v.acknowledged_at or v.updated_at)}\n")
    parts: list[RenderableType] = [head]
    if v.alerts:
        alerts = Table(title="alerts")
        for col in ("alert", "status", "value", "since"):
            alerts.add_column(col)
        for a in v.alerts:
            alerts.add_row(a.name, a.status, "-" if a.value is None else f"{a.value:g}", _when(a.starts_at))
        parts.append(alerts)
    timeline = Table(title="timeline")
    for col in ("when", "who", "what", "detail"):
        timeline.add_column(col)
    for t in v.timeline:
        detail = t.detail.get("why") or ", ".join(f"{k}={val}" for k, val in t.detail.items() if k not in ("from",))
        timeline.add_row(_when(t.at), t.actor, t.action, str(detail))
    parts.append(timeline)
    return Group(*parts)
