"""Deployment history: what ran where and when, for correlating an alert with a recent deploy.

Fed by the Kafka consumer (``sources.kafka``) next to the inbox; read by the
rules stage as a ``daemon.model.DeployHistory`` snapshot, newest first, so a
decision rule can require "the alert started within N minutes after a deploy of
the affected service" and name that deploy (and its revision) as the target.
``record`` is idempotent on the event id, because Kafka redelivers.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from daemon.errors import TemporaryError
from daemon.ingest.inbox import as_utc
from daemon.model import DeployEvent, DeployHistory, DeployKind
from daemon.store.db import Store
from daemon.store.tables import DeployRow


def _event(row: DeployRow) -> DeployEvent:
    return DeployEvent(
        event_id=row.event_id,
        kind=DeployKind(row.kind),
        service=row.service,
        namespace=row.namespace,
        deployment=row.deployment,
        at=as_utc(row.at),
        revision=row.revision,
        image=row.image,
        version=row.version,
        commit=row.commit,
        author=row.author,
        migration=row.migration,
    )


class DeployHistoryStore:
    """Deployment events over ``DeployRow``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, event: DeployEvent) -> bool:
        """Store ``event`` unless its ``event_id`` is known; True when it was new."""
        dialect = sqlite if self._store.is_sqlite else postgresql
        stmt = (
            dialect.insert(DeployRow)
            .values(
                event_id=event.event_id,
                kind=event.kind.value,
                service=event.service,
                namespace=event.namespace,
                deployment=event.deployment,
                revision=event.revision,
                image=event.image,
                version=event.version,
                commit=event.commit,
                author=event.author,
                migration=event.migration,
                at=as_utc(event.at),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(DeployRow.id)
        )
        try:
            async with self._store.transaction() as session:
                return (await session.execute(stmt)).first() is not None
        except (OperationalError, DBAPIError) as exc:
            raise TemporaryError(f"deploy history write failed: {type(exc.orig).__name__}", reason="store") from exc

    async def snapshot(
        self,
        namespace: str | None,
        deployment: str | None,
        service: str | None,
        since: datetime,
        *,
        limit: int = 100,
    ) -> DeployHistory:
        """Deploys of the Deployment ``namespace/deployment`` or of ``service`` since ``since``, newest first."""
        matches: list[ColumnElement[bool]] = []
        if namespace and deployment:
            matches.append((DeployRow.namespace == namespace) & (DeployRow.deployment == deployment))
        if service:
            matches.append(DeployRow.service == service)
        if not matches:
            return DeployHistory()
        stmt = (
            select(DeployRow)
            .where(or_(*matches), DeployRow.at >= as_utc(since))
            .order_by(DeployRow.at.desc(), DeployRow.id.desc())
            .limit(limit)
        )
        try:
            async with self._store.transaction() as session:
                rows = list((await session.execute(stmt)).scalars())
        except (OperationalError, DBAPIError) as exc:
            raise TemporaryError(f"deploy history read failed: {type(exc.orig).__name__}", reason="store") from exc
        return DeployHistory(events=tuple(_event(r) for r in rows))
