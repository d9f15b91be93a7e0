"""Incident persistence: rows in, machine values out, inside the caller's session.

``incidents.write`` opens one transaction per change and calls these: load the
incident with its version, save it only if nobody else changed it (optimistic
concurrency between replicas), and write the effects — audit entries, timers,
verdicts — in that same transaction. ``incidents.read`` builds the decision
record from the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, cast, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.incidents.errors import ConcurrentUpdateError, IncidentNotFoundError
from daemon.incidents.events import TimerKind
from daemon.incidents.state import Incident
from daemon.model import Alert
from daemon.store.tables import ApprovalRow, AuditRow, IncidentAlertRow, IncidentRow, TimerRow


async def load(session: AsyncSession, incident_id: str, *, for_update: bool = False) -> tuple[Incident, int]:
    """The incident and its version; ``for_update`` locks the row until the transaction ends.

    Writers lock (PostgreSQL: ``SELECT … FOR UPDATE``; SQLite has one writer anyway), so a
    burst of writers to one incident queues on the row instead of failing the version check
    and retrying; the version check stays as the guard for writers that did not lock.
    """
    row = await session.get(IncidentRow, incident_id, populate_existing=True, with_for_update=for_update)
    if row is None:
        raise IncidentNotFoundError(incident_id)
    return Incident.from_json(row.decision), row.version


async def load_many_for_update(session: AsyncSession, ids: Sequence[str]) -> dict[str, tuple[Incident, int]]:
    """``load(…, for_update=True)`` of each of ``ids`` in one query, locked in id order (a batch of joins).

    One lock order for every writer: two replicas locking overlapping batches wait, never deadlock.
    """
    stmt = (
        select(IncidentRow.id, IncidentRow.decision, IncidentRow.version)
        .where(IncidentRow.id.in_(sorted(set(ids))))
        .order_by(IncidentRow.id)
        .with_for_update()
    )
    rows = (await session.execute(stmt)).all()
    return {str(i): (Incident.from_json(decision), int(version)) for i, decision, version in rows}


def _stored() -> Any:
    """The incident's id and its stored JSON as text: ``incidents.read`` decodes only what its memo lacks."""
    return select(IncidentRow.id, cast(IncidentRow.decision, Text))


async def stored_many(session: AsyncSession, ids: Sequence[str]) -> list[tuple[str, str]]:
    """``(id, stored JSON)`` of ``ids`` in one query, in that order (an id deleted meanwhile is left out)."""
    by_id: dict[str, str] = dict((await session.execute(_stored().where(IncidentRow.id.in_(list(ids))))).all())
    return [(i, by_id[i]) for i in ids if i in by_id]


async def find_open(session: AsyncSession, group_key: str) -> str | None:
    stmt = (
        select(IncidentRow.id)
        .where(IncidentRow.group_key == group_key, IncidentRow.open.is_(True))
        .order_by(IncidentRow.created_at.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def find_open_many(session: AsyncSession, group_keys: Sequence[str]) -> dict[str, str]:
    """The open incident of each of ``group_keys`` that has one, in one query (a batch of openings)."""
    stmt = select(IncidentRow.group_key, IncidentRow.id).where(
        IncidentRow.group_key.in_(sorted(set(group_keys))), IncidentRow.open.is_(True)
    )
    return {str(key): str(incident_id) for key, incident_id in (await session.execute(stmt)).all()}


def _followed(inc: Incident) -> dict[str, Any]:
    """The row's columns that follow the machine value on every save."""
    return {
        "state": inc.state.value, "open": inc.open, "acknowledged_by": inc.acknowledged_by,
        "acknowledged_at": inc.acknowledged_at, "decision": inc.to_json(), "updated_at": inc.updated_at,
    }  # fmt: skip


async def insert(session: AsyncSession, inc: Incident) -> None:
    """A new incident at version 1 (flushed, so its alerts, verdicts and timers can refer to it)."""
    add_incident(session, inc)
    await session.flush()


def add_incident(session: AsyncSession, inc: Incident) -> None:
    """A new incident at version 1, written at the next flush (a batch of them in one INSERT)."""
    d = inc.decision
    row = IncidentRow(
        id=inc.id, group_key=d.group_key, rule=d.rule, severity=d.severity.value, created_at=inc.opened_at,
        version=1, **_followed(inc),
    )  # fmt: skip
    session.add(row)


async def save(session: AsyncSession, inc: Incident, version: int) -> None:
    """Write ``inc`` if the row is still at ``version``; else ConcurrentUpdateError."""
    result = await session.execute(
        update(IncidentRow)
        .where(IncidentRow.id == inc.id, IncidentRow.version == version)
        .values(version=version + 1, **_followed(inc))
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
    return (await session.scalars(stmt)).first()


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


async def list_stored(
    session: AsyncSession, *, state: str | None, open_only: bool, limit: int
) -> list[tuple[str, str]]:
    """``(id, stored JSON)`` of the newest ``limit`` incidents (in ``state``, or open), newest first, in one query."""
    stmt = _stored().order_by(IncidentRow.created_at.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(IncidentRow.state == state)
    if open_only:
        stmt = stmt.where(IncidentRow.open.is_(True))
    return [(incident_id, stored) for incident_id, stored in await session.execute(stmt)]
