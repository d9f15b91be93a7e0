"""Deployment history: what ran where and when, for correlating an alert with a recent deploy.

Fed by the Kafka consumer (``sources.kafka``), which writes here and nowhere
else: deploy events never enter the alert inbox, so a burst of them cannot use
up the inbox's bound and turn alert webhooks away. Read by the rules stage as a
``daemon.model.DeployHistory`` snapshot, newest first, so a decision rule can
require "the alert started within N minutes after a deploy of the affected
service" and name that deploy (and its revision) as the target. Every write is
idempotent on the event id (``INSERT … ON CONFLICT DO NOTHING``), because Kafka
redelivers: this is the deploy events' own dedupe.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from daemon.deploys import DeployEvent, DeployHistory, DeployKind
from daemon.model import Target
from daemon.store.db import Store
from daemon.store.tables import DeployRow
from daemon.target import WorkloadKind

# Rows per INSERT: 13 bound parameters each, well under SQLite's 32766 and PostgreSQL's 65535.
_INSERT_CHUNK = 500


def _event(row: DeployRow) -> DeployEvent:
    return DeployEvent(
        event_id=row.event_id,
        kind=DeployKind(row.kind),
        service=row.service,
        namespace=row.namespace,
        deployment=row.deployment,
        at=row.at,
        revision=row.revision,
        image=row.image,
        version=row.version,
        commit=row.commit,
        author=row.author,
        migration=row.migration,
        workload_kind=WorkloadKind(row.workload_kind or WorkloadKind.DEPLOYMENT),
    )


def _values(event: DeployEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "kind": event.kind.value,
        "service": event.service,
        "namespace": event.namespace,
        "deployment": event.deployment,
        "revision": event.revision,
        "image": event.image,
        "version": event.version,
        "commit": event.commit,
        "author": event.author,
        "migration": event.migration,
        "workload_kind": event.workload_kind.value,
        "at": event.at,
    }


class DeployHistoryStore:
    """Deployment events over ``DeployRow``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, event: DeployEvent) -> bool:
        """Store ``event`` unless its ``event_id`` is known; True when it was new."""
        dialect = sqlite if self._store.is_sqlite else postgresql
        stmt = (
            dialect.insert(DeployRow)
            .values(**_values(event))
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(DeployRow.id)
        )
        async with self._store.transaction("deploy history write") as session:
            return (await session.execute(stmt)).first() is not None

    async def record_batch(self, events: Sequence[DeployEvent]) -> int:
        """Store the unknown ``events`` in ONE transaction; how many were new.

        The Kafka consumer calls this once per fetched batch and commits the batch's offsets only
        after it returned: all of the batch is durable, or none of it (``TemporaryError`` with reason
        ``store`` when the database cannot answer, as ``Store.transaction`` maps it).
        """
        if not events:
            return 0
        async with self._store.transaction("deploy history write") as session:
            return await self.record_many(await session.connection(), events)

    async def record_many(self, connection: AsyncConnection, events: Sequence[DeployEvent]) -> int:
        """Store the unknown ``events`` on ``connection``, inside the caller's transaction; how many were new."""
        dialect = sqlite if self._store.is_sqlite else postgresql
        # Core insert with a list of parameter sets: one multi-row VALUES per chunk ("insertmanyvalues").
        stmt = (
            dialect.insert(DeployRow.__table__)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(DeployRow.__table__.c.id)
        )
        rows = [_values(e) for e in events]
        new = 0
        for start in range(0, len(rows), _INSERT_CHUNK):
            new += len((await connection.execute(stmt, rows[start : start + _INSERT_CHUNK])).all())
        return new

    async def snapshot(
        self,
        targets: Sequence[Target],
        service: str | None,
        since: datetime,
        *,
        limit: int = 100,
    ) -> DeployHistory:
        """Deploys of any of ``targets`` or of ``service`` since ``since``, newest first."""
        matches: list[ColumnElement[bool]] = [
            (DeployRow.namespace == t.namespace)
            & (DeployRow.deployment == t.name)
            & (DeployRow.workload_kind == t.kind.value)
            for t in targets
        ]
        if service:
            matches.append(DeployRow.service == service)
        if not matches:
            return DeployHistory()
        stmt = (
            select(DeployRow)
            .where(or_(*matches), DeployRow.at >= since)
            .order_by(DeployRow.at.desc(), DeployRow.id.desc())
            .limit(limit)
        )
        async with self._store.transaction("deploy history read") as session:
            rows = list((await session.execute(stmt)).scalars())
        return DeployHistory(events=tuple(_event(r) for r in rows))
