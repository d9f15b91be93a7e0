"""The durable inbox: every accepted alert is written here before the sender hears "ok".

Second stage of the pipeline. The webhook receivers and the poller call
``accept_alerts``; only after that transaction commits do they answer 2xx, so a
crash after the answer loses nothing. Deploy events do not come here: the Kafka
consumer writes them straight to the deploy history (``ingest.history``), so
they never count against the bound below. Rows
are keyed on the event's dedupe key with ``INSERT … ON CONFLICT DO NOTHING``
(SQLite and PostgreSQL), so redeliveries — Alertmanager HA sends duplicates on
purpose — and concurrent deliveries of the same alert create one row. The
``Dispatcher`` reads pending rows in id order and marks them processed, many per UPDATE.

The ``max_pending`` bound is checked against an estimate kept in memory (counted
from the database at the first write, then moved by this process's inserts and
closes) instead of a ``COUNT(*)`` per request: the count cost more than the
insert it guarded. Other replicas' API writes move the real number without
telling us, so the estimate is recounted every ``resync_s`` seconds and always
before a refusal: a refusal is never based on a stale number.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.clock import Clock
from daemon.errors import QueueFullError
from daemon.logs import get_logger
from daemon.metrics import INBOX_PENDING
from daemon.model import Alert
from daemon.store.db import Store
from daemon.store.listen import INBOX_CHANNEL, notify
from daemon.store.tables import InboxRow

log = get_logger(__name__)

ItemKind = Literal["alert"]
# Rows per INSERT statement: 6 bound parameters each, well under SQLite's 32766 and PostgreSQL's 65535.
_INSERT_CHUNK = 500
# Ids per UPDATE … WHERE id IN (…): one bound parameter each.
_UPDATE_CHUNK = 500


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One pending inbox row, decoded."""

    id: int
    kind: ItemKind
    partition_key: str
    received_at: datetime
    alert: Alert


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """How many of a batch were new, and how many the inbox already had (redeliveries)."""

    accepted: int
    duplicates: int


def partition_key(alert: Alert) -> str:
    """The alert's target (``namespace/name``), so one workload's alerts are handled in order.

    An alert that names no workload is ordered with the other alerts of its name.
    """
    return str(alert.target) if alert.target is not None else alert.name


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched; both drivers report it (``CursorResult.rowcount``)."""
    return max(0, int(getattr(result, "rowcount", 0)))


def decode_row(row: InboxRow) -> InboxItem:
    """The item an inbox row holds; ValueError (or KeyError, TypeError) when it cannot be read."""
    if row.kind == "alert":
        return InboxItem(row.id, "alert", row.partition_key, row.received_at, alert=Alert.from_json(row.payload))
    # "deploy" rows were written by versions that queued deploy events here; the history has them.
    raise ValueError(f"unknown inbox kind {row.kind!r}")


class Inbox:
    """Durable, deduplicating, bounded inbox over ``InboxRow``."""

    def __init__(self, store: Store, clock: Clock, *, max_pending: int = 10000, resync_s: float = 5.0) -> None:
        self._store = store
        self._clock = clock
        self.max_pending = max_pending
        self._resync = timedelta(seconds=resync_s)
        # Unprocessed rows as this process believes; None until counted from the database.
        self._pending_estimate: int | None = None
        self._counted_at: datetime | None = None
        self._listeners: list[Callable[[], None]] = []
        # SQLite has one writer; a read-then-write transaction racing another writer fails with
        # SQLITE_BUSY instead of waiting, so this process queues its own writers (claims too).
        self.write_lock = asyncio.Lock() if store.is_sqlite else contextlib.nullcontext()

    @property
    def store(self) -> Store:
        return self._store

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every commit that added rows (the dispatcher's ``wake``)."""
        self._listeners.append(callback)

    def _insert(self, values: dict[str, Any]) -> Any:
        # Both dialects spell it the same; the statement must come from the right one.
        dialect = postgresql if not self._store.is_sqlite else sqlite
        stmt = dialect.insert(InboxRow).values(**values)
        return stmt.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(InboxRow.id)

    def _insert_many(self) -> Any:
        """Core (not ORM) insert for executemany, skipping known dedupe keys, returning the new ids.

        SQLAlchemy turns it into multi-row VALUES ("insertmanyvalues") with one cached compilation.
        """
        dialect = postgresql if not self._store.is_sqlite else sqlite
        stmt = dialect.insert(InboxRow.__table__)
        return stmt.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(InboxRow.__table__.c.id)

    async def _count_pending(self, session: AsyncSession) -> int:
        stmt = select(func.count()).select_from(InboxRow).where(InboxRow.processed_at.is_(None))
        pending = int((await session.execute(stmt)).scalar_one())
        self._pending_estimate, self._counted_at = pending, self._clock.now()
        return pending

    async def _pending_before_write(self, session: AsyncSession) -> int:
        """The pending count to check the bound with: the estimate, or a fresh count when it may mislead."""
        estimate, counted_at = self._pending_estimate, self._counted_at
        if (
            estimate is None
            or counted_at is None
            or estimate >= self.max_pending  # about to refuse: make sure
            or self._clock.now() - counted_at >= self._resync  # other replicas may have written
        ):
            return await self._count_pending(session)
        return estimate

    def _moved(self, delta: int) -> None:
        """Apply this process's own inserts (+) and closes (-) to the estimate and the gauge."""
        if self._pending_estimate is None:
            return
        self._pending_estimate = max(0, self._pending_estimate + delta)
        INBOX_PENDING.set(self._pending_estimate)

    async def _write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert ``rows`` in one transaction; the number actually inserted. Raises QueueFullError first."""
        async with self.write_lock, self._store.transaction() as session:
            pending = await self._pending_before_write(session)
            if pending >= self.max_pending:
                INBOX_PENDING.set(pending)
                raise QueueFullError(f"inbox holds {pending} unprocessed entries (limit {self.max_pending})")
            inserted = 0
            # One multi-row INSERT per chunk: a statement per row cost ~2.5 ms each through
            # aiosqlite's thread hop (profiled in bench/ingest.py), 30x Alertmanager's per-alert cost.
            connection = await session.connection()
            for start in range(0, len(rows), _INSERT_CHUNK):
                result = await connection.execute(self._insert_many(), list(rows[start : start + _INSERT_CHUNK]))
                inserted += len(result.all())
            if inserted:
                await notify(connection, self._store, INBOX_CHANNEL)  # the leader may be another replica
        self._moved(inserted)
        if inserted:
            for callback in self._listeners:
                callback()
        return inserted

    async def accept_alerts(self, alerts: Iterable[Alert]) -> AcceptResult:
        """Write every new alert (by ``dedupe_key``) in one transaction; count the rest as duplicates."""
        now = self._clock.now()
        rows = [
            {
                "dedupe_key": a.dedupe_key,
                "kind": "alert",
                "source": a.source,
                "partition_key": partition_key(a),
                "payload": a.to_json(),
                "received_at": now,
            }
            for a in alerts
        ]
        if not rows:
            return AcceptResult(0, 0)
        inserted = await self._write(rows)
        return AcceptResult(inserted, len(rows) - inserted)

    async def has_room(self) -> bool:
        """Whether an accept would pass the ``max_pending`` bound right now."""
        async with self._store.transaction() as session:
            pending = await self._count_pending(session)
        INBOX_PENDING.set(pending)
        return pending < self.max_pending

    async def mark_processed(self, item_id: int, error: str | None = None) -> None:
        """Close a row: handled (``error`` None) or given up on with the reason recorded."""
        await self.mark_processed_many([(item_id, error)])

    async def mark_processed_many(self, closed: Sequence[tuple[int, str | None]]) -> int:
        """Close many rows in one transaction, one UPDATE per distinct error; how many were still open.

        All or nothing: on ``TemporaryError`` no row was closed and the caller may retry the same list.
        """
        by_error: dict[str | None, list[int]] = {}
        for item_id, error in closed:
            by_error.setdefault(error, []).append(item_id)
        if not by_error:
            return 0
        now = self._clock.now()
        updated = 0
        # The same in-process writer queue as accepts: concurrent SQLite writers otherwise meet in
        # SQLite's busy handler, which sleeps, and starve the webhook (seen in bench/ingest.py).
        async with self.write_lock, self._store.transaction() as session:
            for error, ids in by_error.items():
                for start in range(0, len(ids), _UPDATE_CHUNK):
                    result = await session.execute(
                        update(InboxRow)
                        .where(InboxRow.id.in_(ids[start : start + _UPDATE_CHUNK]), InboxRow.processed_at.is_(None))
                        .values(processed_at=now, error=error)
                        .execution_options(synchronize_session=False)
                    )
                    updated += _rowcount(result)
        self._moved(-updated)
        return updated
