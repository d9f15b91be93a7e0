"""Every notification the outbox holds for one incident, and how its delivery went, for the incident page.

Read-only over ``OutboxRow``: the channel, what kind of notice, pending / sent /
failed, attempts, the last error (secrets masked) and when it was sent. The
payloads (decision records) are not read: the page has the record already.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from daemon.redact import scrub
from daemon.store.db import Store
from daemon.store.tables import OutboxRow


@dataclass(frozen=True, slots=True)
class Delivery:
    channel: str
    kind: str
    state: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str


async def deliveries(store: Store, incident_id: str, limit: int = 200) -> list[Delivery]:
    columns = (
        OutboxRow.channel, OutboxRow.kind, OutboxRow.state, OutboxRow.attempts, OutboxRow.created_at,
        OutboxRow.sent_at, OutboxRow.last_error,
    )  # fmt: skip
    stmt = select(*columns).where(OutboxRow.incident_id == incident_id).order_by(OutboxRow.id).limit(limit)
    async with store.transaction("incident deliveries") as s:
        rows = (await s.execute(stmt)).all()
    return [
        Delivery(r.channel, r.kind, r.state, r.attempts or 0, r.created_at, r.sent_at, scrub(r.last_error or ""))
        for r in rows
    ]
