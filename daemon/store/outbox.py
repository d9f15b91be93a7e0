"""Writing notifications into the outbox, inside the caller's transaction.

Incidents call ``enqueue_notification`` in the same transaction as the state
change that caused it, so a notification exists if and only if the change
does. ``notify.outbox`` delivers the rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from daemon.model import NotificationEvent
from daemon.redact import redact
from daemon.store.tables import OutboxRow


def event_payload(event: NotificationEvent) -> dict[str, Any]:
    return {
        "incident_id": event.incident_id,
        "kind": event.kind.value,
        "severity": event.severity.value,
        "summary": event.summary,
        "incident": redact(dict(event.incident)),
        "channels": list(event.channels),
    }


async def enqueue_notification(
    session: AsyncSession,
    event: NotificationEvent,
    now: datetime,
    *,
    channels: tuple[str, ...] = ("slack", "pagerduty"),
) -> None:
    """Queue ``event`` once per delivery channel (slack, pagerduty, kafka)."""
    for channel in channels:
        session.add(
            OutboxRow(
                incident_id=event.incident_id,
                channel=channel,
                kind=event.kind.value,
                payload=event_payload(event),
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
