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

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update

from daemon.clock import Clock
from daemon.errors import QueueFullError
from daemon.logs import get_logger
from daemon.metrics import INBOX_PENDING
from daemon.model import Alert
from daemon.store.db import Store
from daemon.store.group_commit import GroupCommit
from daemon.store.listen import INBOX_CHANNEL
from daemon.store.tables import InboxRow

log = get_logger(__name__)

ItemKind = Literal["alert"]
# One inbox row as the driver takes it: dedupe_key, kind, source, partition_key, payload (JSON text),
# received_at (as the column type binds it: an aware datetime, or SQLite's text form).
Row = tuple[str, str, str, str, str, Any]
_SQLITE_INSERT = """
INSERT INTO inbox (dedupe_key, kind, source, partition_key, payload, received_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (dedupe_key) DO NOTHING
"""
# One statement for the whole group: unnest turns six arrays into rows (no bound-parameter limit,
# one plan), RETURNING names the new rows, and pg_notify wakes the leader's dispatcher at commit.
# Outside an explicit transaction it commits on its own: one round trip.
_POSTGRES_INSERT = """
WITH new AS (
    INSERT INTO inbox (dedupe_key, kind, source, partition_key, payload, received_at)
    SELECT d, k, s, p, j::json, r
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) AS t(d, k, s, p, j, r)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING dedupe_key
)
SELECT dedupe_key, pg_notify($7, '') FROM new
"""
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


async def _sqlite_insert(driver: Any, groups: Sequence[Sequence[Row]]) -> list[int]:
    """An executemany per request on an aiosqlite connection, so each counts its new rows.

    The driver opens the transaction at the first INSERT (taking SQLite's write lock, or waiting
    the busy timeout for it); the caller's ``Store.connect`` commits it. One thread hop per
    request and one for the commit: each hop is a wake-up of the event loop, which a loaded
    machine makes expensive.
    """
    try:
        inserted = []
        for rows in groups:
            cursor = await driver.executemany(_SQLITE_INSERT, rows)
            inserted.append(max(0, cursor.rowcount))  # rows ON CONFLICT DO NOTHING skipped are no change
    except sqlite3.Error as exc:
        # Raised past SQLAlchemy: wrapped as it would have, so the store maps it ("database is locked": 503).
        raise sa_exc.DBAPIError.instance(_SQLITE_INSERT, None, exc, sqlite3.Error) from exc
    return inserted


async def _postgres_insert(driver: Any, groups: Sequence[Sequence[Row]]) -> list[int]:
    """One autocommitted statement on an asyncpg connection; the new rows are credited in request order.

    Two requests of the group carrying the same alert make one row: the first to carry it
    inserted it, the later one counts it as a duplicate, as if it had come after the commit.
    """
    columns: list[list[Any]] = [[] for _ in range(6)]
    for rows in groups:
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    new = {record[0] for record in await driver.fetch(_POSTGRES_INSERT, *columns, INBOX_CHANNEL)}
    inserted = []
    for rows in groups:
        count = 0
        for row in rows:
            if row[0] in new:
                new.discard(row[0])  # the same key later in this group was the duplicate
                count += 1
        inserted.append(count)
    return inserted


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
        self.write_lock = store.write_lock  # with the incidents' writers: SQLite has one writer (store.db)
        self._group: GroupCommit[Sequence[Row], int] = GroupCommit(self._write_groups)
        column = InboxRow.__table__.c.received_at.type
        dialect = store.engine.dialect
        self._received_at: Callable[[datetime], Any] = column.dialect_impl(dialect).bind_processor(dialect) or (
            lambda value: value
        )

    @property
    def store(self) -> Store:
        return self._store

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every commit that added rows (the dispatcher's ``wake``)."""
        self._listeners.append(callback)

    async def _count_pending(self) -> int:
        async with self._store.transaction("inbox count") as session:
            stmt = select(func.count()).select_from(InboxRow).where(InboxRow.processed_at.is_(None))
            pending = int((await session.execute(stmt)).scalar_one())
        self._pending_estimate, self._counted_at = pending, self._clock.now()
        return pending

    async def _pending_before_write(self) -> int:
        """The pending count to check the bound with: the estimate, or a fresh count when it may mislead."""
        estimate, counted_at = self._pending_estimate, self._counted_at
        if (
            estimate is None
            or counted_at is None
            or estimate >= self.max_pending  # about to refuse: make sure
            or self._clock.now() - counted_at >= self._resync  # other replicas may have written
        ):
            return await self._count_pending()
        return estimate

    def _moved(self, delta: int) -> None:
        """Apply this process's own inserts (+) and closes (-) to the estimate and the gauge."""
        if self._pending_estimate is None:
            return
        self._pending_estimate = max(0, self._pending_estimate + delta)
        INBOX_PENDING.set(self._pending_estimate)

    async def _write_groups(self, groups: Sequence[Sequence[Row]]) -> list[int]:
        """Insert each request's rows, all in one transaction; how many of each were new.

        Raises QueueFullError (for the whole group) before writing anything when the inbox is full.
        """
        async with self.write_lock:
            pending = await self._pending_before_write()
            if pending >= self.max_pending:
                INBOX_PENDING.set(pending)
                raise QueueFullError(f"inbox holds {pending} unprocessed entries (limit {self.max_pending})")
            async with self._store.connect("inbox write") as conn:  # commits on leaving, or rolls back
                # The driver's connection, past SQLAlchemy's per-row binding and its thread hop per
                # statement: through the ORM a 100-alert insert cost ~13 ms, this way ~1.3 ms.
                driver = (await conn.get_raw_connection()).driver_connection
                if self._store.is_sqlite:
                    inserted = await _sqlite_insert(driver, groups)
                else:
                    inserted = await _postgres_insert(driver, groups)
        total = sum(inserted)
        self._moved(total)
        if total:
            for callback in self._listeners:
                callback()
        return inserted

    def _rows(self, alerts: Iterable[Alert]) -> list[Row]:
        """The inbox rows of ``alerts``, in the driver's terms (the column types' own bind conversions)."""
        received_at = self._received_at(self._clock.now())
        return [
            (a.dedupe_key, "alert", a.source, partition_key(a), orjson.dumps(a.to_json()).decode(), received_at)
            for a in alerts
        ]

    async def accept_alerts(self, alerts: Iterable[Alert]) -> AcceptResult:
        """Write every new alert (by ``dedupe_key``), committed before this returns; count the rest as duplicates.

        Concurrent calls share transactions (``store.group_commit``); each still returns only
        once its own rows are committed, and raises what that transaction raised.
        """
        rows = self._rows(alerts)
        if not rows:
            return AcceptResult(0, 0)
        inserted = await self._group.submit(rows)
        return AcceptResult(inserted, len(rows) - inserted)

    async def has_room(self) -> bool:
        """Whether an accept would pass the ``max_pending`` bound right now."""
        pending = await self._count_pending()
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
