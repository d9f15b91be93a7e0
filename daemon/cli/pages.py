"""Rich pages of decision records for ``rollbackd incidents list|show``: the CLI's rendering, nothing else.

``cli.incidents`` fetches records over the HTTP API and parses them with
``IncidentRecord.from_json``; these functions turn the typed record into a
table (the list) or a page (header, alerts, outcome, timeline).
"""

from __future__ import annotations

from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from daemon.incidents.record import IncidentRecord

_STATE_STYLE = {"resolved": "green", "failed": "red", "escalated": "bold red", "awaiting_approval": "yellow"}


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def waiting_for(r: IncidentRecord) -> str:
    """``2x sre, 1x cto`` while the quorum is short, else empty."""
    return ", ".join(f"{n}x {role}" for role, n in r.missing_roles.items()) if r.open else ""


def render_list(records: list[IncidentRecord]) -> Table:
    """One row per incident. The id is never shortened, whatever the terminal's width: responders
    paste it into ``rollbackd ack``; the other columns wrap instead."""
    table = Table(title="incidents", show_lines=False)
    id_width = max((len(r.id) for r in records), default=2)
    table.add_column("id", no_wrap=True, min_width=id_width, overflow="fold")
    for col in ("state", "severity", "rule", "targets", "opened", "ack"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.id,
            Text(r.state.value, style=_STATE_STYLE.get(r.state.value, "")),
            r.severity.value,
            r.rule,
            ", ".join(r.targets),
            _when(r.opened_at),
            r.acknowledged_by or "-",
        )
    return table


def _head(r: IncidentRecord) -> Text:
    d = r.decision
    head = Text()
    head.append(f"incident {r.id}  ", style="bold")
    head.append(r.state.value, style=_STATE_STYLE.get(r.state.value, "bold"))
    head.append(f"  {r.severity.value}  rule {r.rule}\n")
    head.append(f"action: {d.action.value}  targets: {', '.join(r.targets)}\n")
    if d.reason:
        head.append(f"why: {d.reason}\n")
    if d.measured:
        head.append("measured: " + ", ".join(f"{k}={val:g}" for k, val in d.measured.items()) + "\n")
    if d.deploy is not None:
        dep = d.deploy
        head.append(f"deploy: {dep.service} {dep.version or dep.image} at {dep.at.isoformat()}\n")
    if waiting := waiting_for(r):
        head.append(f"waiting for: {waiting}\n")
    if r.acknowledged_by:
        head.append(f"acknowledged by {r.acknowledged_by} at {_when(r.acknowledged_at or r.updated_at)}\n")
    for a in r.actions:
        head.append(f"action on {a.target}: {a.result}" + (f" ({a.detail})" if a.detail else "") + "\n")
    if r.verification is not None:
        head.append(f"verification {'passed' if r.verification.ok else 'failed'}: {r.verification.detail}\n")
    return head


def render_timeline(r: IncidentRecord) -> RenderableType:
    """The decision record as a readable page: header, alerts, then the timeline."""
    parts: list[RenderableType] = [_head(r)]
    if r.alerts:
        alerts = Table(title="alerts")
        for col in ("alert", "status", "value", "since"):
            alerts.add_column(col)
        for a in r.alerts:
            alerts.add_row(a.name, a.status, "-" if a.value is None else f"{a.value:g}", _when(a.starts_at))
        parts.append(alerts)
    timeline = Table(title="timeline")
    for col in ("when", "who", "what", "detail"):
        timeline.add_column(col)
    for t in r.timeline:
        detail = t.detail.get("why") or ", ".join(f"{k}={val}" for k, val in t.detail.items() if k not in ("from",))
        timeline.add_row(_when(t.at), t.actor, t.action, str(detail))
    parts.append(timeline)
    return Group(*parts)
