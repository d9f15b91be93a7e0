"""PagerDuty through the real ``pagerduty`` client against the loopback Events API v2 (HTTPS)."""

from __future__ import annotations

import pytest

from daemon.clock import FakeClock
from daemon.model import NotificationKind
from daemon.notify.outbox import OutboxWorker
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.store.db import Store
from tests.fakes.fixtures import ROUTING_KEY, enqueue, fake_pagerduty, outbox_rows, pagerduty_notifier, tls
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.records import Lifecycle, lifecycle
from tests.fakes.tls import TlsFiles

pytestmark = pytest.mark.integration
__all__ = ["fake_pagerduty", "lifecycle", "tls"]
K = NotificationKind


async def drain(worker: OutboxWorker, clock: FakeClock, rounds: int = 20, step_s: float = 400.0) -> None:
    for _ in range(rounds):
        if await worker.run_once() == 0:
            await clock.advance(step_s)
            if await worker.run_once() == 0:
                return


async def test_whole_lifecycle_on_one_dedup_key(store: Store, clock: FakeClock, fake_pagerduty: FakePagerDuty,
                                                tls: TlsFiles, lifecycle: Lifecycle) -> None:  # fmt: skip
    notifier = pagerduty_notifier(fake_pagerduty, tls, clock)
    worker = OutboxWorker(store, clock, [notifier])
    for kind in (K.OPENED, K.ACKNOWLEDGED, K.RESOLVED):
        await enqueue(store, clock, "inc1", kind, lifecycle.record(kind), outbox_channels=("pagerduty",))
    await drain(worker, clock)
    notifier.close()

    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in fake_pagerduty.events} == {"rollbackd-inc1"}
    assert {e["routing_key"] for e in fake_pagerduty.events} == {ROUTING_KEY}
    alert = fake_pagerduty.alerts["rollbackd-inc1"]
    assert alert.status == "resolved"
    assert alert.history == ["trigger", "acknowledge", "resolve"]
    trigger = fake_pagerduty.events[0]
    assert trigger["payload"]["severity"] == "error"  # P1
    details = trigger["payload"]["custom_details"]
    assert details["rule"] == "checkout-error-rate"
    assert details["targets"] == ["shop/checkout"]
    assert details["measured"] == {"error_rate": 0.072}
    assert details["revisions"]["rollback_to"] == 41
    assert trigger["links"][0]["href"] == "https://rollbackd.example/incidents/inc1"
    assert [r.state for r in await outbox_rows(store)] == ["sent", "sent", "sent"]


async def test_rate_limit_waits_instead_of_collecting_429s(
    store: Store, clock: FakeClock, fake_pagerduty: FakePagerDuty, tls: TlsFiles, lifecycle: Lifecycle
) -> None:
    notifier = pagerduty_notifier(fake_pagerduty, tls, clock)
    worker = OutboxWorker(store, clock, [notifier], batch=200)
    for i in range(125):
        await enqueue(store, clock, f"inc{i}", K.OPENED, lifecycle.record(K.OPENED), outbox_channels=("pagerduty",))
    await worker.run_once()
    assert len(fake_pagerduty.events) == 120
    assert 429 not in [status for status, _ in fake_pagerduty.requests], "the server never had to throttle us"
    waiting = [r for r in await outbox_rows(store) if r.state == "pending"]
    assert len(waiting) == 5
    assert all((r.last_error or "").startswith("rate_limited_local") for r in waiting)
    notifier.close()


async def test_invalid_event_fails_permanently_with_pagerdutys_reason(
    store: Store, clock: FakeClock, fake_pagerduty: FakePagerDuty, tls: TlsFiles, lifecycle: Lifecycle
) -> None:
    notifier = PagerDutyNotifier({"checkout": "too-short-key"}, base_url=fake_pagerduty.base_url, ca_file=tls.cert,
                                 clock=clock)  # fmt: skip
    worker = OutboxWorker(store, clock, [notifier])
    await enqueue(store, clock, "inc1", K.OPENED, lifecycle.record(K.OPENED), outbox_channels=("pagerduty",))
    await worker.run_once()
    [row] = await outbox_rows(store)
    assert row.state == "failed"
    assert "http_400" in (row.last_error or "")
    assert "routing_key" in (row.last_error or "")
    assert fake_pagerduty.events == []
    notifier.close()


async def test_an_applied_rollback_is_a_change_event_on_the_service(
    store: Store, clock: FakeClock, fake_pagerduty: FakePagerDuty, tls: TlsFiles, lifecycle: Lifecycle
) -> None:
    notifier = pagerduty_notifier(fake_pagerduty, tls, clock)
    worker = OutboxWorker(store, clock, [notifier])
    for kind in (K.OPENED, K.VERIFYING, K.RESOLVED):
        await enqueue(store, clock, "inc1", kind, lifecycle.record(kind), outbox_channels=("pagerduty",))
    await drain(worker, clock)
    notifier.close()

    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger", "resolve"]
    [change] = fake_pagerduty.changes
    assert change["routing_key"] == ROUTING_KEY
    applied = lifecycle.record(K.VERIFYING)["actions"][0]
    assert change["payload"]["summary"] == (
        f"rollbackd rolled back shop/checkout revision {applied['from']} → {applied['to']}"
        " (rule checkout-error-rate, incident inc1)"
    )
    assert change["payload"]["source"] == "shop/checkout"
    assert change["payload"]["custom_details"]["rule"] == "checkout-error-rate"
    assert change["links"] == [{"href": "https://rollbackd.example/incidents/inc1", "text": "rollbackd incident inc1"}]
    assert [r.state for r in await outbox_rows(store)] == ["sent", "sent", "sent"]


async def test_a_dry_run_is_no_change_event(
    store: Store, clock: FakeClock, fake_pagerduty: FakePagerDuty, tls: TlsFiles, lifecycle: Lifecycle
) -> None:
    """A daemon in dry run reaches verifying with every target ``dry_run``: nothing changed, so PagerDuty hears none."""
    notifier = pagerduty_notifier(fake_pagerduty, tls, clock)
    worker = OutboxWorker(store, clock, [notifier])
    dry = lifecycle.record(K.VERIFYING)
    for action in dry["actions"]:
        action["result"] = "dry_run"
    await enqueue(store, clock, "inc1", K.OPENED, lifecycle.record(K.OPENED), outbox_channels=("pagerduty",))
    await enqueue(store, clock, "inc1", K.VERIFYING, dry, outbox_channels=("pagerduty",))
    await drain(worker, clock)
    notifier.close()

    assert [e["event_action"] for e in fake_pagerduty.events] == ["trigger"]
    assert fake_pagerduty.changes == []
    assert [r.state for r in await outbox_rows(store)] == ["sent", "sent"]
