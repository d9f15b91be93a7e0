"""Slack through the real slack_sdk client against the loopback Web API, driven by the outbox."""

from __future__ import annotations

import asyncio

import pytest

from daemon.clock import FakeClock
from daemon.model import NotificationKind
from daemon.notify.outbox import OutboxWorker
from daemon.store.db import Store
from tests.fakes.fixtures import enqueue, fake_slack, outbox_rows, slack_notifier
from tests.fakes.records import VERIFY_DETAIL, Lifecycle, lifecycle
from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.integration
__all__ = ["fake_slack", "lifecycle"]


async def drain(worker: OutboxWorker, store: Store, clock: FakeClock, rounds: int = 60, step_s: float = 30.0) -> None:
    """Run the worker, moving fake time on while rows wait for their retry."""
    for _ in range(rounds):
        if await worker.run_once() == 0:
            if all(r.state != "pending" for r in await outbox_rows(store)):
                return
            await clock.advance(step_s)


def button_ids(blocks: list[dict]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_one_message_updated_through_the_life_with_its_thread(
    store: Store, clock: FakeClock, fake_slack: FakeSlack, lifecycle: Lifecycle
) -> None:
    steps = lifecycle.pairs()
    worker = OutboxWorker(store, clock, [slack_notifier(fake_slack)])
    await enqueue(store, clock, "inc1", *steps[0], outbox_channels=("slack",))
    await drain(worker, store, clock)

    [message] = fake_slack.top_level()
    assert message.channel == "C0INCIDENTS"
    text = str(message.blocks)
    assert "checkout-error-rate" in text
    assert "error_rate = 0.072" in text
    assert "approval from engineering_lead" in text  # what it waits for
    assert button_ids(message.blocks) == ["rollbackd:ack:inc1", "rollbackd:approve:inc1", "rollbackd:reject:inc1"]

    for kind, rec in steps[1:]:
        await enqueue(store, clock, "inc1", kind, rec, outbox_channels=("slack",))
    await drain(worker, store, clock)

    assert len(fake_slack.top_level()) == 1, "the incident keeps one message"
    assert len(message.edits) == len(steps) - 1
    assert "resolved" in message.text
    assert button_ids(message.blocks) == [], "a closed incident offers no buttons"
    assert f"Verification passed: {VERIFY_DETAIL}" in str(message.blocks)
    replies = [m.text for m in fake_slack.thread(message.ts)]
    assert len(replies) == len(steps)
    assert "Decision" in replies[0]
    assert "Waiting for approval from engineering_lead" in replies[1]
    assert "Acknowledged by ada" in replies[2]
    assert "Approved by ada (engineering_lead)" in replies[3]
    assert "Rolling back shop/checkout to revision 41" in replies[4]
    assert "Rollback applied (shop/checkout: rolled back (revision 42 → 41)); verifying" in replies[5]
    assert f"Resolved. Verification passed: {VERIFY_DETAIL}" in replies[6]


async def test_slack_outage_then_every_notification_once_in_order(
    store: Store, clock: FakeClock, fake_slack: FakeSlack, lifecycle: Lifecycle
) -> None:
    worker = OutboxWorker(store, clock, [slack_notifier(fake_slack)])
    fake_slack.fail_next(3, status=429, retry_after=20)
    fake_slack.fail_next(4, status=500)
    for incident in ("inc1", "inc2"):
        for kind, rec in lifecycle.pairs():
            await enqueue(store, clock, incident, kind, rec, outbox_channels=("slack",))
    await drain(worker, store, clock, rounds=200)

    rows = await outbox_rows(store)
    assert [r.state for r in rows] == ["sent"] * len(rows)
    assert sum(r.attempts for r in rows) > len(rows), "the outage forced retries"
    statuses = [c.status for c in fake_slack.calls]
    assert statuses.count(429) == 3
    assert statuses.count(500) == 4
    for message in fake_slack.top_level():
        replies = fake_slack.thread(message.ts)
        assert len(replies) == len(lifecycle.steps), "each step exactly once"
        expected = ["Decision", "Waiting", "Acknowledged", "Approved", "Rolling back", "verifying", "Resolved"]
        assert [w in r.text for w, r in zip(expected, replies, strict=True)] == [True] * len(expected)
    assert len(fake_slack.top_level()) == 2


async def test_429_waits_for_retry_after(
    store: Store, clock: FakeClock, fake_slack: FakeSlack, lifecycle: Lifecycle
) -> None:
    worker = OutboxWorker(store, clock, [slack_notifier(fake_slack)])
    fake_slack.fail_next(1, status=429, retry_after=30)
    opened = lifecycle.record(NotificationKind.OPENED)
    await enqueue(store, clock, "inc1", NotificationKind.OPENED, opened, outbox_channels=("slack",))
    await worker.run_once()
    [row] = await outbox_rows(store)
    assert row.state == "pending"
    assert "rate_limited" in (row.last_error or "")
    await clock.advance(29)
    assert await worker.run_once() == 0, "not before Retry-After"
    await clock.advance(1)
    assert await worker.run_once() == 1
    assert len(fake_slack.top_level()) == 1


async def test_restart_in_the_middle_loses_nothing(
    store: Store, clock: FakeClock, fake_slack: FakeSlack, lifecycle: Lifecycle
) -> None:
    first = OutboxWorker(store, clock, [slack_notifier(fake_slack)], lease_s=60)
    for kind, rec in lifecycle.pairs():
        await enqueue(store, clock, "inc1", kind, rec, outbox_channels=("slack",))
    assert await first.run_once() == 1  # OPENED delivered
    # The next delivery hangs past the client timeout while the daemon stops: the row stays claimed.
    fake_slack.stall_next(1, 3.0)
    slow = slack_notifier(fake_slack, timeout=1)
    hung = OutboxWorker(store, clock, [slow], lease_s=60)
    run = asyncio.create_task(hung.run())
    await asyncio.sleep(0.3)
    await hung.stop(grace_s=0.01)
    assert run.done()
    rows = await outbox_rows(store)
    assert (rows[1].state, rows[1].attempts) == ("pending", 1), "claimed but not finished"

    second = OutboxWorker(store, clock, [slack_notifier(fake_slack)], lease_s=60)
    await clock.advance(61)  # the dead claim's lease runs out
    await drain(second, store, clock)
    rows = await outbox_rows(store)
    assert [r.state for r in rows] == ["sent"] * len(lifecycle.steps)
    [message] = fake_slack.top_level()
    replies = [r.text for r in fake_slack.thread(message.ts)]
    assert len(replies) == len(lifecycle.steps), "every step once: the interrupted request was never applied"
    assert "Acknowledged by ada" in replies[2]
    assert "Resolved" in replies[-1]
