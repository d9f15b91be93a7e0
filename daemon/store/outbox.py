"""Writing notifications and publications into the outbox, inside the caller's transaction.

Incidents call ``enqueue_notification`` (Slack, PagerDuty) and
``enqueue_publication`` (the ``kafka`` channel: decision and action events) in
the same transaction as the state change that caused them, so a notification
or an event exists if and only if the change does. ``notify.outbox`` delivers
the rows, in id order per incident and channel; ``queued_notifications`` reads
them back for ``rollbackd replay``, which records and never delivers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
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


PUBLICATION_CHANNEL = "kafka"


def enqueue_publication(session: AsyncSession, event: Mapping[str, Any], now: datetime) -> None:
    """Queue one built event (``sources.decision_events``) on the ``kafka`` channel.

    The row's payload is the whole event, ``event_id`` included, so every delivery of the row
    sends the same event and a consumer can tell a redelivery from a new event.
    """
    session.add(
        OutboxRow(
            incident_id=event["incident_id"],
            channel=PUBLICATION_CHANNEL,
            kind=event["type"],
            payload=dict(event),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class QueuedNotification:
    """A notification as the outbox holds it (what ``rollbackd replay`` reports instead of sending)."""

    incident_id: str | None
    channel: str
    kind: str
    created_at: datetime


async def queued_notifications(session: AsyncSession) -> list[QueuedNotification]:
    """Every outbox row, oldest first."""
    rows = (await session.execute(select(OutboxRow).order_by(OutboxRow.id))).scalars()
    return [QueuedNotification(r.incident_id, r.channel, r.kind, r.created_at) for r in rows]
