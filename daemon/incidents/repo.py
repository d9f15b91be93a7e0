"""Incident persistence: rows in, machine values and decision records out, inside the caller's session.

``IncidentService`` opens one transaction per event and calls these: load the
incident with its version, save it only if nobody else changed it (optimistic
concurrency between replicas), and write the effects — audit entries, timers,
outbox notifications — in that same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.incidents.errors import ConcurrentUpdateError, IncidentNotFoundError
from daemon.incidents.events import TimerKind
from daemon.incidents.machine import Incident
from daemon.incidents.record import AlertEntry, ApprovalEntry, IncidentView, TimelineEntry, TimerEntry
from daemon.model import Alert
from daemon.store.tables import ApprovalRow, AuditRow, IncidentAlertRow, IncidentRow, TimerRow


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we write is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def load(session: AsyncSession, incident_id: str) -> tuple[Incident, int]:
    row = await session.get(IncidentRow, incident_id, populate_existing=True)
    if row is None:
        raise IncidentNotFoundError(incident_id)
    return Incident.from_json(row.decision), row.version


async def find_open(session: AsyncSession, group_key: str) -> str | None:
    stmt = (
        select(IncidentRow.id)
        .where(IncidentRow.group_key == group_key, IncidentRow.open.is_(True))
        .order_by(IncidentRow.created_at.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def insert(session: AsyncSession, inc: Incident) -> None:
    session.add(
        IncidentRow(
            id=inc.id,
            group_key=inc.decision.group_key,
            rule=inc.decision.rule,
            severity=inc.decision.severity.value,
            state=inc.state.value,
            open=inc.open,
            acknowledged_by=inc.acknowledged_by,
            acknowledged_at=inc.acknowledged_at,
            decision=inc.to_json(),
            created_at=inc.opened_at,
            updated_at=inc.updated_at,
            version=1,
        )
    )
    await session.flush()


async def save(session: AsyncSession, inc: Incident, version: int) -> None:
    """Write ``inc`` if the row is still at ``version``; else ConcurrentUpdateError."""
    result = await session.execute(
        update(IncidentRow)
        .where(IncidentRow.id == inc.id, IncidentRow.version == version)
        .values(
            state=inc.state.value,
            open=inc.open,
            acknowledged_by=inc.acknowledged_by,
            acknowledged_at=inc.acknowledged_at,
            decision=inc.to_json(),
            updated_at=inc.updated_at,
            version=version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentUpdateError(inc.id)


def add_alert(session: AsyncSession, incident_id: str, alert: Alert, at: datetime) -> None:
    session.add(
        IncidentAlertRow(
            incident_id=incident_id,
            fingerprint=alert.fingerprint,
            status=alert.status.value,
            starts_at=alert.starts_at,
            value=alert.value,
            alert=alert.to_json(),
            at=at,
        )
    )


def add_audit(
    session: AsyncSession, incident_id: str | None, *, at: datetime, actor: str, action: str, detail: dict[str, Any]
) -> None:
    session.add(AuditRow(incident_id=incident_id, at=at, actor=actor, action=action, detail=detail))


def add_verdict(
    session: AsyncSession,
    incident_id: str,
    *,
    approver: str,
    role: str,
    verdict: str,
    via: str,
    comment: str,
    at: datetime,
) -> None:
    session.add(
        ApprovalRow(
            incident_id=incident_id, approver=approver, role=role, verdict=verdict, via=via, comment=comment, at=at
        )
    )


async def set_timer(
    session: AsyncSession, incident_id: str, kind: TimerKind, due: datetime, *, new_incident: bool = False
) -> None:
    """Arm (or re-arm) the incident's timer of ``kind``; a just-inserted incident has none to look up."""
    row = (
        None
        if new_incident
        else (
            await session.scalars(
                select(TimerRow).where(TimerRow.incident_id == incident_id, TimerRow.kind == kind.value)
            )
        ).first()
    )
    if row is None:
        session.add(TimerRow(incident_id=incident_id, kind=kind.value, due_at=due, fired_at=None, cancelled=False))
    else:
        row.due_at, row.fired_at, row.cancelled = due, None, False


async def cancel_timer(session: AsyncSession, incident_id: str, kind: TimerKind) -> None:
    await session.execute(
        update(TimerRow)
        .where(TimerRow.incident_id == incident_id, TimerRow.kind == kind.value, TimerRow.fired_at.is_(None))
        .values(cancelled=True)
        .execution_options(synchronize_session=False)
    )


def _pending() -> Any:
    return and_(TimerRow.fired_at.is_(None), TimerRow.cancelled.is_(False))


async def due_timers(session: AsyncSession, now: datetime, limit: int = 100) -> Sequence[TimerRow]:
    stmt = select(TimerRow).where(_pending(), TimerRow.due_at <= now).order_by(TimerRow.due_at).limit(limit)
    return (await session.scalars(stmt)).all()


async def next_due(session: AsyncSession) -> datetime | None:
    stmt = select(TimerRow.due_at).where(_pending()).order_by(TimerRow.due_at).limit(1)
    found = (await session.scalars(stmt)).first()
    return utc(found) if found else None


async def claim_timer(session: AsyncSession, timer_id: int, now: datetime) -> bool:
    """Mark a timer fired; False if another replica (or a cancel) got there first."""
    result = await session.execute(
        update(TimerRow)
        .where(TimerRow.id == timer_id, _pending())
        .values(fired_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def ids_with_firing_alert(session: AsyncSession, fingerprint: str) -> list[str]:
    """Open incidents this alert joined; the machine knows whether it still fires there."""
    stmt = (
        select(IncidentRow.id)
        .join(IncidentAlertRow, IncidentAlertRow.incident_id == IncidentRow.id)
        .where(IncidentRow.open.is_(True), IncidentAlertRow.fingerprint == fingerprint)
        .distinct()
    )
    return list((await session.scalars(stmt)).all())


async def ids_in_states(session: AsyncSession, states: Sequence[str]) -> list[str]:
    stmt = select(IncidentRow.id).where(IncidentRow.state.in_(list(states))).order_by(IncidentRow.created_at)
    return list((await session.scalars(stmt)).all())


async def list_ids(session: AsyncSession, *, state: str | None, open_only: bool, limit: int) -> list[str]:
    stmt = select(IncidentRow.id).order_by(IncidentRow.created_at.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(IncidentRow.state == state)
    if open_only:
        stmt = stmt.where(IncidentRow.open.is_(True))
    return list((await session.scalars(stmt)).all())


async def view(session: AsyncSession, incident_id: str, *, with_timeline: bool = True) -> IncidentView:
    """The decision record of one incident, from every table that holds part of it."""
    inc, _ = await load(session, incident_id)
    alerts = (
        await session.scalars(
            select(IncidentAlertRow).where(IncidentAlertRow.incident_id == incident_id).order_by(IncidentAlertRow.id)
        )
    ).all()
    verdicts = (
        await session.scalars(
            select(ApprovalRow).where(ApprovalRow.incident_id == incident_id).order_by(ApprovalRow.id)
        )
    ).all()
    timers = (
        await session.scalars(select(TimerRow).where(TimerRow.incident_id == incident_id).order_by(TimerRow.due_at))
    ).all()
    audit: Sequence[AuditRow] = ()
    if with_timeline:
        audit = (
            await session.scalars(select(AuditRow).where(AuditRow.incident_id == incident_id).order_by(AuditRow.id))
        ).all()
    return IncidentView(
        id=inc.id,
        state=inc.state.value,
        open=inc.open,
        decision=MappingProxyType(inc.decision.to_json()),
        opened_at=inc.opened_at,
        updated_at=inc.updated_at,
        closed_at=inc.closed_at,
        acknowledged_by=inc.acknowledged_by,
        acknowledged_at=inc.acknowledged_at,
        escalations=inc.escalations,
        objective_breached=inc.objective_breached,
        missing_roles=MappingProxyType(inc.missing_roles() if inc.decision.approval.required else {}),
        alerts=tuple(
            AlertEntry(
                a.fingerprint,
                str(a.alert.get("name", "")),
                a.status,
                a.value,
                utc(a.starts_at),
                utc(a.at),
                MappingProxyType(dict(a.alert.get("labels", {}))),
            )
            for a in alerts
        ),
        approvals=tuple(ApprovalEntry(v.approver, v.role, v.verdict, v.via, utc(v.at), v.comment) for v in verdicts),
        timers=tuple(
            TimerEntry(t.kind, utc(t.due_at), "fired" if t.fired_at else "cancelled" if t.cancelled else "pending")
            for t in timers
        ),
        timeline=tuple(TimelineEntry(utc(a.at), a.actor, a.action, MappingProxyType(dict(a.detail))) for a in audit),
    )
