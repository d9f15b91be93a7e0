"""Dispatcher leases on inbox rows: how a row committed in any order is handled by one dispatcher.

Part of the ingest stage, between the durable inbox and the dispatcher. A
cursor ("rows after the last id seen") skips rows on PostgreSQL: sequence ids
are handed out at insert time but transactions commit in any order, so a row
with a lower id can become visible after a higher one was read. Claims need no
cursor: every read takes the oldest unprocessed rows that nobody holds and
marks them held, in one statement.

* PostgreSQL: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``, so
  two dispatchers claiming at once get disjoint rows without waiting on each
  other.
* SQLite has one writer at a time, so the same UPDATE is already exclusive.

A claim is a lease (``claimed_until``): the holder renews it while it works,
releases it when it stops, and a holder that died or froze loses it when it
runs out, so another dispatcher takes the row over. Rows a previous run of the
same instance left claimed are released when it starts again, so a restart
does not wait for its own leases.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update

from daemon.clock import Clock
from daemon.ingest.inbox import Inbox, InboxItem, decode_row
from daemon.logs import get_logger
from daemon.store.tables import InboxRow

log = get_logger(__name__)


class InboxClaims:
    """Claims, renews and releases inbox rows for one dispatcher named ``holder``."""

    def __init__(self, inbox: Inbox, clock: Clock, *, holder: str, lease_s: float = 15.0) -> None:
        self._store = inbox.store
        self.inbox = inbox
        self._clock = clock
        self.holder = holder
        self.lease = timedelta(seconds=lease_s)

    async def claim(self, limit: int) -> list[InboxItem]:
        """Up to ``limit`` of the oldest unprocessed, unheld rows, now held by this holder, in id order.

        Rows that cannot be decoded are closed with the reason instead of being returned.
        """
        return (await self.claim_page(limit))[0]

    async def claim_page(self, limit: int) -> tuple[list[InboxItem], bool]:
        """``claim``, and whether the page was full (more rows may be waiting) or the inbox is drained."""
        now = self._clock.now()
        free = (
            select(InboxRow.id)
            .where(
                InboxRow.processed_at.is_(None),
                or_(InboxRow.claimed_until.is_(None), InboxRow.claimed_until < now),
            )
            .order_by(InboxRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
        )
        stmt = (
            update(InboxRow)
            .where(InboxRow.id.in_(free.scalar_subquery()))
            .values(claimed_by=self.holder, claimed_until=now + self.lease)
            .returning(InboxRow)
            .execution_options(synchronize_session=False)
        )
        async with self.inbox.write_lock, self._store.transaction("inbox claim") as session:
            rows = sorted((await session.execute(stmt)).scalars().all(), key=lambda r: r.id)
        items: list[InboxItem] = []
        for row in rows:
            try:
                items.append(decode_row(row))
            except (KeyError, ValueError, TypeError) as exc:
                # A row we cannot read can never be handled; close it loudly instead of looping on it.
                log.exception("inbox row undecodable", inbox_id=row.id, kind=row.kind, error=str(exc))
                await self.inbox.mark_processed(row.id, error=f"undecodable: {exc}")
        return items, len(rows) >= limit

    async def renew(self) -> int:
        """Extend the lease on every row this holder still has open; how many."""
        stmt = (
            update(InboxRow)
            .where(InboxRow.claimed_by == self.holder, InboxRow.processed_at.is_(None))
            .values(claimed_until=self._clock.now() + self.lease)
            .execution_options(synchronize_session=False)
        )
        async with self.inbox.write_lock, self._store.transaction("inbox claim renewal") as session:
            result = await session.execute(stmt)
        return max(0, int(getattr(result, "rowcount", 0)))

    async def release(self) -> int:
        """Give back every open row this holder has, for the next dispatcher to take at once; how many."""
        stmt = (
            update(InboxRow)
            .where(InboxRow.claimed_by == self.holder, InboxRow.processed_at.is_(None))
            .values(claimed_by=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        async with self.inbox.write_lock, self._store.transaction("inbox claim release") as session:
            result = await session.execute(stmt)
        return max(0, int(getattr(result, "rowcount", 0)))
