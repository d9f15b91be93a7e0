"""The contract every notifier passes, run through the outbox worker against its local server.

Retry on 429 (honouring Retry-After), 5xx and timeouts; no retry on other 4xx,
with the reason recorded; per-incident order kept while another incident
proceeds; no secret or approval code in any captured log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.metrics import REGISTRY
from daemon.model import NotificationKind
from daemon.notify.outbox import OutboxWorker
from daemon.store.db import Store
from tests.contract.conftest import Harness
from tests.fakes.fixtures import APPROVAL_CODE, enqueue, outbox_rows
from tests.fakes.records import Lifecycle, lifecycle

__all__ = ["lifecycle"]

OPENED, ACKED, RESOLVED = NotificationKind.OPENED, NotificationKind.ACKNOWLEDGED, NotificationKind.RESOLVED
Add = Callable[..., Awaitable[None]]


def worker_for(h: Harness, store: Store, clock: FakeClock) -> OutboxWorker:
    # One delivery at a time, so "the first call fails" means the first row enqueued.
    return OutboxWorker(store, clock, [h.make()], concurrency=1)


@pytest.fixture
def add(harness: Harness, store: Store, clock: FakeClock, lifecycle: Lifecycle) -> Callable[..., Awaitable[None]]:
    """Queue the real record of step ``kind`` for ``incident``, with ``extra`` fields mixed in."""

    async def add(incident: str, kind: NotificationKind, **extra: object) -> None:
        rec = {**lifecycle.record(kind), **extra}
        await enqueue(store, clock, incident, kind, rec, channels=harness.incident_channels,
                      outbox_channels=(harness.name,))  # fmt: skip

    return add


def retries(channel: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("rollbackd_notification_retries_total", {"channel": channel, "reason": reason}) or 0
    )


async def test_429_is_retried_after_retry_after(
    harness: Harness, store: Store, clock: FakeClock, add: Add
) -> None:
    worker = worker_for(harness, store, clock)
    before = retries(harness.name, "rate_limited")
    harness.fail_next(1, "429")
    await add("inc1", OPENED)
    await worker.run_once()
    [row] = await outbox_rows(store)
    assert row.state == "pending"
    assert (row.last_error or "").startswith("rate_limited")
    assert retries(harness.name, "rate_limited") == before + 1
    await clock.advance(6.9)
    assert await worker.run_once() == 0, "retried before Retry-After elapsed"
    await clock.advance(0.2)
    assert await worker.run_once() == 1
    assert harness.observed("inc1") == ["opened"]
    assert (await outbox_rows(store))[0].state == "sent"


@pytest.mark.parametrize("failure", ["500", "timeout"])
async def test_5xx_and_timeouts_are_retried_with_backoff(
    harness: Harness, store: Store, clock: FakeClock, add: Add, failure: str
) -> None:
    worker = worker_for(harness, store, clock)
    harness.fail_next(2, failure)
    await add("inc1", OPENED)
    for _ in range(2):
        await worker.run_once()
        [row] = await outbox_rows(store)
        assert row.state == "pending", "a transient failure is never final"
        expected = "timeout" if failure == "timeout" else "http_"
        assert expected in (row.last_error or "")
        await clock.advance(300)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(store)
    assert row.state == "sent"
    assert row.attempts == 3
    assert harness.observed("inc1") == ["opened"]


async def test_4xx_fails_permanently_with_the_reason(
    harness: Harness, store: Store, clock: FakeClock, add: Add
) -> None:
    worker = worker_for(harness, store, clock)
    harness.fail_next(1, "4xx")
    await add("inc1", OPENED)
    await worker.run_once()
    [row] = await outbox_rows(store)
    assert row.state == "failed"
    assert (row.last_error or "").split(":")[0] in ("channel_not_found", "http_400")
    sent = harness.requests()
    await clock.advance(3600)
    assert await worker.run_once() == 0
    assert harness.requests() == sent, "a permanent failure is not retried"
    # The next step of the same incident is not blocked by a permanently failed one.
    await add("inc1", RESOLVED)
    assert await worker.run_once() == 1
    assert (await outbox_rows(store))[1].state == "sent"


async def test_per_incident_order_kept_while_others_proceed(
    harness: Harness, store: Store, clock: FakeClock, add: Add
) -> None:
    worker = worker_for(harness, store, clock)
    harness.fail_next(1, "429")
    for kind in (OPENED, ACKED, RESOLVED):
        await add("inc1", kind)
    await add("inc2", OPENED)
    for _ in range(3):
        await worker.run_once()
    assert harness.observed("inc1") == [], "nothing of inc1 may overtake its failed first step"
    assert harness.observed("inc2") == ["opened"]
    await clock.advance(7)
    while await worker.run_once():
        pass
    assert harness.observed("inc1") == ["opened", "acknowledged", "resolved"]


async def test_no_secret_or_code_in_any_log_line(
    harness: Harness, store: Store, clock: FakeClock, add: Add, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = worker_for(harness, store, clock)
    with capture_logs() as logs:
        harness.fail_next(1, "429")
        harness.fail_next(1, "500")
        harness.fail_next(1, "timeout")
        await add("inc1", OPENED, code=APPROVAL_CODE, approval_code=APPROVAL_CODE)
        await add("inc1", ACKED)
        for _ in range(6):
            await worker.run_once()
            await clock.advance(300)
        harness.fail_next(1, "4xx")
        await add("inc1", RESOLVED)
        await worker.run_once()
    assert logs, "the worker logs what it does"
    text = repr(logs) + caplog.text
    for secret in (*harness.secrets, APPROVAL_CODE):
        assert secret not in text
    assert APPROVAL_CODE not in harness.wire(), "a code never leaves the daemon"
    assert [r.state for r in await outbox_rows(store)] == ["sent", "sent", "failed"]
