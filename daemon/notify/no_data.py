"""Tells responders when a threshold rule's query has returned no data for too long.

The poller never treats missing data as healthy or as a breach, and never
rolls back because of it; after ``prometheus.no_data_notify_after_s`` it calls
``notify_no_data``, which queues a note for Slack under a stable per-rule id,
so a rule that stays silent keeps updating one message instead of flooding the
channel. The note carries a real ``IncidentRecord`` (a notify-only decision
without targets), so the Slack notifier reads it like every other record.
PagerDuty is not paged for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from daemon.clock import Clock
from daemon.incidents.record import IncidentRecord
from daemon.incidents.state import State
from daemon.logs import get_logger
from daemon.model import ActionKind, Decision, NotificationEvent, NotificationKind, ThresholdSpec
from daemon.store.db import Store
from daemon.store.outbox import enqueue_notification

log = get_logger(__name__)


def no_data_id(rule: str) -> str:
    """A stable id (≤ 32 chars) for the no-data thread of one rule."""
    return "nodata-" + hashlib.sha256(rule.encode()).hexdigest()[:16]


async def notify_no_data(
    spec: ThresholdSpec,
    since: datetime,
    *,
    store: Store,
    clock: Clock,
    channels: tuple[str, ...],
    wake: Callable[[], None],
) -> None:
    """Queue a Slack note saying ``spec``'s query has had no data since ``since``."""
    log.error("threshold query has no data", rule=spec.name, since=since.isoformat(), expr=spec.expr)
    if "slack" not in channels:
        return
    minutes = max(1, round((clock.now() - since).total_seconds() / 60))
    summary = (
        f"no data for {minutes} min from threshold rule {spec.name}: it cannot fire, and rollbackd will not act on it"
    )
    # A real decision record, so Slack renders the note like any incident: a notify-only decision, no targets.
    now = clock.now()
    decision = Decision(
        rule=spec.name, severity=spec.severity, action=ActionKind.NOTIFY, targets=(), channels=spec.channels,
        reason=f"query returned nothing since {since.isoformat()}: {spec.expr}",
    )  # fmt: skip
    record = IncidentRecord(no_data_id(spec.name), State.OPEN, True, decision, opened_at=since, updated_at=now)
    event = NotificationEvent(
        record.id, NotificationKind.NO_DATA, spec.severity, summary, record.to_json(), spec.channels
    )
    async with store.transaction() as s:
        await enqueue_notification(s, event, now, channels=("slack",))
    wake()
