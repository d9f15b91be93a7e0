"""What the inbox still holds, read the way the daemon decodes it: a test's view of unprocessed rows."""

from __future__ import annotations

from sqlalchemy import select

from daemon.ingest import Inbox, InboxItem
from daemon.ingest.inbox import decode_row
from daemon.store.tables import InboxRow


async def unprocessed(inbox: Inbox, limit: int = 100) -> list[InboxItem]:
    """Unprocessed rows, oldest first, whoever holds a claim on them."""
    async with inbox.store.transaction() as session:
        stmt = select(InboxRow).where(InboxRow.processed_at.is_(None)).order_by(InboxRow.id).limit(limit)
        rows = list((await session.execute(stmt)).scalars())
    return [decode_row(r) for r in rows]
