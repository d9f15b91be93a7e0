"""What the inbox still holds, read the way the daemon decodes it, or counted in a child daemon's SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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


def inbox_counts(db: Path) -> tuple[int, int]:
    """(alert rows, unprocessed rows) of a ``rollbackd run``'s inbox, read straight from its SQLite file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        total = conn.execute("SELECT count(*) FROM inbox WHERE kind = 'alert'").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM inbox WHERE processed_at IS NULL").fetchone()[0]
    return int(total), int(pending)
