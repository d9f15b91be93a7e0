"""The outbox worker with an in-process notifier: claims, order, backoff, give-up, leases."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from daemon.clock import FakeClock
from daemon.errors import PermanentError, TemporaryError
from daemon.model import NotificationKind
from daemon.notify.outbox import OutboxWorker
from daemon.store.db import Store
from tests.fakes.fixtures import enqueue, outbox_rows
from tests.fakes.records import Lifecycle, lifecycle

__all__ = ["lifecycle"]
OPENED, RESOLVED = NotificationKind.OPENED, NotificationKind.RESOLVED


class ScriptedNotifier:
    """Implements the Notifier protocol; raises the scripted errors first, then records deliveries."""

    channel = "slack"

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.delivered: list[tuple[str, str, int]] = []

    async def deliver(self, payload: dict[str, Any]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append((payload["incident_id"], payload["kind"], payload["outbox_id"]))


async def add(store: Store, clock: FakeClock, lifecycle: Lifecycle, incident: str, kind: NotificationKind) -> None:
    await enqueue(store, clock, incident, kind, lifecycle.record(kind), outbox_channels=("slack", "pagerduty"))


async def test_only_rows_of_known_channels_are_claimed(store: Store, clock: FakeClock, lifecycle: Lifecycle) -> None:
    notifier = ScriptedNotifier()
    worker = OutboxWorker(store, clock, [notifier])
    await add(store, clock, lifecycle, "inc1", NotificationKind.OPENED)
    assert await worker.run_once() == 1
    states = {r.channel: r.state for r in await outbox_rows(store)}
    assert states == {"slack": "sent", "pagerduty": "pending"}, "a channel without a notifier waits"


async def test_backoff_is_jittered_bounded_and_grows() -> None:
    worker = OutboxWorker(None, FakeClock(), [], rng=random.Random(1), base_delay_s=2, max_delay_s=300)  # type: ignore[arg-type]
    delays = [worker.backoff(n, None) for n in range(1, 12)]
    assert 1 <= delays[0] <= 2
    assert all(150 <= d <= 300 for d in delays[-3:]), "capped at max_delay_s"
    assert worker.backoff(3, 42.0) == 42.0, "Retry-After wins"
    assert worker.backoff(3, 10**9) == 1200, "a bogus Retry-After is bounded"


async def test_gives_up_after_the_bound_with_reason(store: Store, clock: FakeClock, lifecycle: Lifecycle) -> None:
    notifier = ScriptedNotifier(*[TemporaryError("down", reason="http_503") for _ in range(100)])
    worker = OutboxWorker(store, clock, [notifier], give_up_after_s=3600, max_delay_s=600)
    await enqueue(store, clock, "inc1", OPENED, lifecycle.record(OPENED), outbox_channels=("slack",))
    for _ in range(40):
        await worker.run_once()
        await clock.advance(600)
    [row] = await outbox_rows(store)
    assert row.state == "failed"
    assert (row.last_error or "").startswith("gave_up")


async def test_permanent_error_records_reason_and_unblocks_the_next(
    store: Store, clock: FakeClock, lifecycle: Lifecycle
) -> None:
    notifier = ScriptedNotifier(PermanentError("slack chat.postMessage: channel_not_found", reason="channel_not_found"))
    worker = OutboxWorker(store, clock, [notifier])
    await enqueue(store, clock, "inc1", OPENED, lifecycle.record(OPENED), outbox_channels=("slack",))
    await enqueue(store, clock, "inc1", RESOLVED, lifecycle.record(RESOLVED), outbox_channels=("slack",))
    await worker.run_once()
    await worker.run_once()
    rows = await outbox_rows(store)
    assert [r.state for r in rows] == ["failed", "sent"]
    assert rows[0].last_error == "channel_not_found: slack chat.postMessage: channel_not_found"


async def test_an_unexpected_notifier_bug_is_retried_not_fatal(
    store: Store, clock: FakeClock, lifecycle: Lifecycle
) -> None:
    notifier = ScriptedNotifier(KeyError("blocks"))
    worker = OutboxWorker(store, clock, [notifier])
    await enqueue(store, clock, "inc1", OPENED, lifecycle.record(OPENED), outbox_channels=("slack",))
    await worker.run_once()
    await clock.advance(10)
    await worker.run_once()
    assert [r.state for r in await outbox_rows(store)] == ["sent"]


async def test_two_workers_never_deliver_the_same_row(store: Store, clock: FakeClock, lifecycle: Lifecycle) -> None:
    a, b = ScriptedNotifier(), ScriptedNotifier()
    for i in range(10):
        await enqueue(store, clock, f"inc{i}", OPENED, lifecycle.record(OPENED), outbox_channels=("slack",))
    wa, wb = OutboxWorker(store, clock, [a], batch=3), OutboxWorker(store, clock, [b], batch=3)
    for _ in range(6):
        await asyncio.gather(wa.run_once(), wb.run_once())
    ids = [d[2] for d in a.delivered + b.delivered]
    assert sorted(ids) == sorted(set(ids))
    assert len(ids) == 10


async def test_run_delivers_on_wake_and_stops(store: Store, clock: FakeClock, lifecycle: Lifecycle) -> None:
    notifier = ScriptedNotifier()
    worker = OutboxWorker(store, clock, [notifier])
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    await enqueue(store, clock, "inc1", OPENED, lifecycle.record(OPENED), outbox_channels=("slack",))
    worker.wake()
    for _ in range(100):
        if notifier.delivered:
            break
        await asyncio.sleep(0.01)
    assert notifier.delivered == [("inc1", "opened", 1)], "wake() delivers without waiting for the poll"
    await worker.stop()
    assert task.done()
