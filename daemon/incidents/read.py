"""The read model: builds the ``IncidentRecord`` from every table that holds part of it, and serves reads.

``build_records`` is the one builder of the decision record (``build_record``
is it for one incident). ``incidents.write`` calls it inside the transaction
that changed the incident (so the record each outbox notification carries is
exactly what that transaction commits); ``Reader`` calls it for the API's, the
CLI's and the incident pages' reads.

A page of the list is five queries of plain rows, whatever its length, and a
record is built from exactly the rows it is read from: the stored JSON (the
incident, its alerts, its audit details) comes as text, so those rows are the
key of ``RecordMemo``. The reader's memo hands back the record it built from
the same rows before, so an incident nobody changed is neither decoded nor
built again; any change to any of its rows is a different key.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from types import MappingProxyType
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.incidents import repo
from daemon.incidents.errors import IncidentNotFoundError
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

# The columns each child table gives the record, the incident id first. Plain rows, not ORM entities: a
# page of 1,000 is some 4,000 rows, and building, tracking and collecting that many mapped objects was
# most of the list's time (issue 19). Selected through the mapped attributes, so the session still
# flushes the writer's pending rows first and the record shows what its transaction will commit.
_ALERT = (
    IncidentAlertRow.incident_id, IncidentAlertRow.fingerprint, IncidentAlertRow.status, IncidentAlertRow.value,
    IncidentAlertRow.starts_at, IncidentAlertRow.at, cast(IncidentAlertRow.alert, Text),
)  # fmt: skip
_VERDICT = (
    ApprovalRow.incident_id, ApprovalRow.approver, ApprovalRow.role, ApprovalRow.verdict, ApprovalRow.via,
    ApprovalRow.at, ApprovalRow.comment,
)  # fmt: skip
_TIMER = (TimerRow.incident_id, TimerRow.kind, TimerRow.due_at, TimerRow.fired_at, TimerRow.cancelled)
_AUDIT = (AuditRow.incident_id, AuditRow.at, AuditRow.actor, AuditRow.action, cast(AuditRow.detail, Text))

Rows = tuple[tuple[Any, ...], ...]


class RecordMemo:
    """The records built lately, keyed by every row each was built from; the least recently used go first.

    The key is the whole input of ``_record``, a pure function: a hit is exactly what building again
    would give, whoever changed the rows meanwhile (this replica, another one, or nobody). A list
    record with its key takes about 14 KB, so the default bound holds two pages of 1,000 in ~28 MB.
    """

    def __init__(self, size: int = 2048) -> None:
        self._size = size
        self._records: dict[Hashable, IncidentRecord] = {}

    def get(self, key: Hashable) -> IncidentRecord | None:
        record = self._records.pop(key, None)
        if record is not None:
            self._records[key] = record  # the most recently used goes last
        return record

    def put(self, key: Hashable, record: IncidentRecord) -> None:
        self._records[key] = record
        while len(self._records) > self._size:
            del self._records[next(iter(self._records))]


async def _children(
    session: AsyncSession, columns: tuple[Any, ...], ids: Sequence[str], order: Any, row_id: Any, *where: Any
) -> dict[str, Rows]:
    """One query for ``columns`` of the rows that belong to any of ``ids``: incident id → the other columns.

    ``row_id`` breaks ties, so an incident's rows come in the same order however many incidents are read.
    """
    stmt = select(*columns).where(columns[0].in_(ids), *where).order_by(order, row_id)
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for incident_id, *rest in await session.execute(stmt):
        grouped.setdefault(incident_id, []).append(tuple(rest))
    return {incident_id: tuple(rows) for incident_id, rows in grouped.items()}


async def build_record(session: AsyncSession, incident_id: str, *, with_timeline: bool = True) -> IncidentRecord:
    """The decision record of one incident as it stands in ``session``; IncidentNotFoundError if none."""
    records = await build_records(session, [incident_id], with_timeline=with_timeline)
    if not records:
        raise IncidentNotFoundError(incident_id)
    return records[0]


async def build_records(session: AsyncSession, ids: Sequence[str], *, with_timeline: bool) -> list[IncidentRecord]:
    """The records of ``ids`` in that order (an id deleted meanwhile is left out), in five queries."""
    return await _build(session, await repo.stored_many(session, ids), with_timeline=with_timeline, memo=None)


async def _build(
    session: AsyncSession, stored: Sequence[tuple[str, str]], *, with_timeline: bool, memo: RecordMemo | None
) -> list[IncidentRecord]:
    ids = [incident_id for incident_id, _ in stored]
    alerts = await _children(session, _ALERT, ids, IncidentAlertRow.id, IncidentAlertRow.id)
    verdicts = await _children(session, _VERDICT, ids, ApprovalRow.id, ApprovalRow.id)
    timers = await _children(session, _TIMER, ids, TimerRow.due_at, TimerRow.id)
    only = () if with_timeline else (AuditRow.action.in_(_OUTCOMES),)
    audits = await _children(session, _AUDIT, ids, AuditRow.id, AuditRow.id, *only)
    records = []
    for incident_id, incident in stored:
        rows = (incident, alerts.get(incident_id, ()), verdicts.get(incident_id, ()), timers.get(incident_id, ()),
                audits.get(incident_id, ()))  # fmt: skip
        key = (with_timeline, rows)
        record = memo.get(key) if memo is not None else None
        if record is None:
            record = _record(*rows, with_timeline=with_timeline)
            if memo is not None:
                memo.put(key, record)
        records.append(record)
    return records


def _record(
    incident: str, alerts: Rows, verdicts: Rows, timers: Rows, audit_rows: Rows, *, with_timeline: bool
) -> IncidentRecord:
    """One record from the incident's stored JSON and its child rows, in the column order of ``_ALERT`` …"""
    inc = Incident.from_json(json.loads(incident))
    audit = [
        TimelineEntry(at, actor, action, MappingProxyType(json.loads(detail)))
        for at, actor, action, detail in audit_rows
    ]
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
        alerts=tuple(_alert(a) for a in alerts),
        approvals=tuple(ApprovalEntry(*v) for v in verdicts),
        actions=_actions(audit),
        verification=_verification(audit),
        timers=tuple(
            TimerEntry(kind, due_at, "fired" if fired_at else "cancelled" if cancelled else "pending")
            for kind, due_at, fired_at, cancelled in timers
        ),
        timeline=tuple(audit) if with_timeline else (),
    )


def _alert(row: tuple[Any, ...]) -> AlertEntry:
    fingerprint, status, value, starts_at, at, stored = row
    alert = json.loads(stored)
    return AlertEntry(
        fingerprint, str(alert.get("name", "")), status, value, starts_at, at,
        MappingProxyType(dict(alert.get("labels", {}))), MappingProxyType(dict(alert.get("annotations") or {})),
        str(alert.get("generator_url") or ""),
    )  # fmt: skip


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
    """Reads for the API, the CLI and the pages: one record, or a page of them without their timelines."""

    def __init__(self, store: Store, memo: RecordMemo | None = None) -> None:
        self._store = store
        self._memo = memo if memo is not None else RecordMemo()

    async def get(self, incident_id: str) -> IncidentRecord:
        async with self._store.transaction() as s:
            return await build_record(s, incident_id)

    async def list(self, state: str | None = None, open_only: bool = False, limit: int = 100) -> list[IncidentRecord]:
        async with self._store.transaction() as s:
            stored = await repo.list_stored(s, state=state, open_only=open_only, limit=max(1, min(limit, 1000)))
            return await _build(s, stored, with_timeline=False, memo=self._memo)
