"""The read model: builds the ``IncidentRecord`` from every table that holds part of it, and serves reads.

``build_record`` is the one builder of the decision record. ``incidents.write``
calls it inside the transaction that changed the incident (so the record each
outbox notification carries is exactly what that transaction commits);
``Reader`` calls it for the API's and the CLI's reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.incidents import repo
from daemon.incidents.events import RollbackFinished, VerificationFailed, VerificationPassed
from daemon.incidents.record import (
    ActionEntry,
    AlertEntry,
    ApprovalEntry,
    IncidentRecord,
    TimelineEntry,
    TimerEntry,
    Verification,
)
from daemon.incidents.state import Incident
from daemon.store.db import Store
from daemon.store.tables import ApprovalRow, AuditRow, IncidentAlertRow, TimerRow

# The audit entries the record's ``actions`` and ``verification`` come from; a list reads only these.
_OUTCOMES = (RollbackFinished.name, VerificationPassed.name, VerificationFailed.name)


def _by_incident(rows: Sequence[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.incident_id, []).append(row)
    return grouped


async def _children(
    session: AsyncSession, table: Any, ids: Sequence[str], order: Any, *where: Any
) -> dict[str, list[Any]]:
    """One query for the rows of ``table`` that belong to any of ``ids``, grouped by incident in ``order``.

    The row id breaks ties, so an incident's rows come in the same order however many incidents are read.
    """
    stmt = select(table).where(table.incident_id.in_(ids), *where).order_by(order, table.id)
    return _by_incident((await session.scalars(stmt)).all())


async def build_record(session: AsyncSession, incident_id: str, *, with_timeline: bool = True) -> IncidentRecord:
    """The decision record of one incident as it stands in ``session``."""
    inc, _ = await repo.load(session, incident_id)
    return (await _build(session, [inc], with_timeline=with_timeline))[0]


async def build_records(session: AsyncSession, ids: Sequence[str], *, with_timeline: bool) -> list[IncidentRecord]:
    """The records of ``ids`` in that order, in five queries whatever their number (a page of the list)."""
    return await _build(session, await repo.load_many(session, ids), with_timeline=with_timeline)


async def _build(session: AsyncSession, incidents: Sequence[Incident], *, with_timeline: bool) -> list[IncidentRecord]:
    ids = [inc.id for inc in incidents]
    alerts = await _children(session, IncidentAlertRow, ids, IncidentAlertRow.id)
    verdicts = await _children(session, ApprovalRow, ids, ApprovalRow.id)
    timers = await _children(session, TimerRow, ids, TimerRow.due_at)
    only = () if with_timeline else (AuditRow.action.in_(_OUTCOMES),)
    audits = await _children(session, AuditRow, ids, AuditRow.id, *only)
    return [
        _record(inc, alerts.get(inc.id, []), verdicts.get(inc.id, []), timers.get(inc.id, []),
                audits.get(inc.id, []), with_timeline=with_timeline)
        for inc in incidents
    ]  # fmt: skip


def _record(
    inc: Incident,
    alerts: Sequence[IncidentAlertRow],
    verdicts: Sequence[ApprovalRow],
    timers: Sequence[TimerRow],
    audit_rows: Sequence[AuditRow],
    *,
    with_timeline: bool,
) -> IncidentRecord:
    audit = [TimelineEntry(a.at, a.actor, a.action, MappingProxyType(dict(a.detail))) for a in audit_rows]
    return IncidentRecord(
        id=inc.id,
        state=inc.state,
        open=inc.open,
        decision=inc.decision,
        opened_at=inc.opened_at,
        updated_at=inc.updated_at,
        closed_at=inc.closed_at,
        acknowledged_by=inc.acknowledged_by,
        acknowledged_at=inc.acknowledged_at,
        escalations=inc.escalations,
        objective_breached=inc.objective_breached,
        missing_roles=MappingProxyType(inc.missing_roles()),
        alerts=tuple(
            AlertEntry(
                a.fingerprint, str(a.alert.get("name", "")), a.status, a.value, a.starts_at, a.at,
                MappingProxyType(dict(a.alert.get("labels", {}))),
                MappingProxyType(dict(a.alert.get("annotations") or {})), str(a.alert.get("generator_url") or ""),
            )
            for a in alerts
        ),
        approvals=tuple(ApprovalEntry(v.approver, v.role, v.verdict, v.via, v.at, v.comment) for v in verdicts),
        actions=_actions(audit),
        verification=_verification(audit),
        timers=tuple(
            TimerEntry(t.kind, t.due_at, "fired" if t.fired_at else "cancelled" if t.cancelled else "pending")
            for t in timers
        ),
        timeline=tuple(audit) if with_timeline else (),
    )


def _actions(audit: Sequence[TimelineEntry]) -> tuple[ActionEntry, ...]:
    """Each target's result, from the latest ``rollback_finished`` (a re-driven rollback reports again)."""
    finished = [t for t in audit if t.action == RollbackFinished.name]
    results = finished[-1].detail.get("results", ()) if finished else ()
    return tuple(ActionEntry.from_json(r) for r in results)


def _verification(audit: Sequence[TimelineEntry]) -> Verification | None:
    checks = [t for t in audit if t.action in (VerificationPassed.name, VerificationFailed.name)]
    if not checks:
        return None
    last = checks[-1]
    return Verification(last.action == VerificationPassed.name, str(last.detail.get("verification", "")), last.at)


class Reader:
    """Reads for the API and the CLI: one record, or a page of them without their timelines."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, incident_id: str) -> IncidentRecord:
        async with self._store.transaction() as s:
            return await build_record(s, incident_id)

    async def list(self, state: str | None = None, open_only: bool = False, limit: int = 100) -> list[IncidentRecord]:
        async with self._store.transaction() as s:
            ids = await repo.list_ids(s, state=state, open_only=open_only, limit=max(1, min(limit, 1000)))
            return await build_records(s, ids, with_timeline=False)
