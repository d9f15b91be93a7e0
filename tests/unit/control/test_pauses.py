"""Pauses on a real store (``--store=both`` runs SQLite and PostgreSQL): persisted, audited, announced, expiring."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from daemon.clock import FakeClock
from daemon.control.pauses import AUTOMATION_SLACK, PauseError, Pauses, PauseWatcher
from daemon.metrics import REGISTRY
from daemon.scope import Scope
from daemon.store.db import Store
from daemon.store.tables import AuditRow, OutboxRow
from daemon.target import Target

WEB = Target("shop", "web")


def gauge(scope: str) -> float:
    return REGISTRY.get_sample_value("rollbackd_automation_pauses", {"scope": scope}) or 0.0


async def test_a_pause_is_persisted_audited_announced_and_ends_by_itself(store: Store, clock: FakeClock) -> None:
    pauses = Pauses(store, clock, channels=("slack", AUTOMATION_SLACK))
    p = await pauses.pause(Scope.parse("namespace:shop"), "db failover drill", "sre1", timedelta(minutes=30))
    # A second view of the same store (another replica) sees it at once: nothing is cached.
    other = Pauses(store, clock)
    assert [a.id for a in await other.active()] == [p.id]
    assert (await other.active())[0].covers("any-rule", [WEB])
    async with store.transaction() as s:
        audit = (await s.scalars(select(AuditRow).where(AuditRow.action == "automation_paused"))).one()
        notice = (await s.scalars(select(OutboxRow).where(OutboxRow.channel == AUTOMATION_SLACK))).one()
    assert (audit.actor, audit.detail["reason"], audit.detail["until"]) == (
        "sre1", "db failover drill", p.until.isoformat()
    )  # fmt: skip
    assert "paused for namespace:shop by sre1 (db failover drill) until" in notice.payload["text"]
    await clock.advance(30 * 60 - 1)
    assert await other.active() != []
    await clock.advance(1)
    assert await other.active() == []
    listed = await other.listing()
    assert [(x.id, x.status(clock.now())) for x in listed] == [(p.id, "expired")]


async def test_resume_one_or_all_ends_them_and_says_who(store: Store, clock: FakeClock) -> None:
    pauses = Pauses(store, clock, channels=(AUTOMATION_SLACK,))
    a = await pauses.pause(Scope.parse("all"), "incident 42", "ana", timedelta(hours=1))
    b = await pauses.pause(Scope.parse("rule:error-rate"), "tuning", "dan", timedelta(hours=1))
    assert [p.id for p in await pauses.resume(a.id, "eve")] == [a.id]
    assert [p.id for p in await pauses.active()] == [b.id]
    with pytest.raises(PauseError, match=f"no active pause '{a.id}'"):
        await pauses.resume(a.id, "eve")
    ended = await pauses.resume(None, "eve")
    assert [(p.id, p.resumed_by) for p in ended] == [(b.id, "eve")]
    assert await pauses.active() == []
    async with store.transaction() as s:
        texts = [r.payload["text"] for r in await s.scalars(select(OutboxRow).order_by(OutboxRow.id))]
    assert sum("resumed for" in t for t in texts) == 2


@pytest.mark.parametrize(
    ("reason", "duration", "message"),
    [
        ("  ", timedelta(hours=1), "a pause needs a reason"),
        ("drill", timedelta(0), "at most 7 days"),
        ("drill", timedelta(days=8), "at most 7 days"),
    ],
)
async def test_a_pause_without_reason_or_with_a_bad_duration_is_refused(
    store: Store, clock: FakeClock, reason: str, duration: timedelta, message: str
) -> None:
    with pytest.raises(PauseError, match=message):
        await Pauses(store, clock).pause(Scope.parse("all"), reason, "sre1", duration)
    assert await Pauses(store, clock).listing() == []


async def test_the_watcher_sets_the_gauge_from_the_store(store: Store, clock: FakeClock) -> None:
    pauses = Pauses(store, clock)
    watcher = PauseWatcher(pauses)
    await pauses.pause(Scope.parse("all"), "freeze", "sre1", timedelta(minutes=5))
    await pauses.pause(Scope.parse("deployment:shop/web"), "canary", "sre2", timedelta(minutes=10))
    assert len(await watcher.refresh()) == 2
    assert (gauge("all"), gauge("deployment"), gauge("rule")) == (1, 1, 0)
    await clock.advance(5 * 60)
    assert [p.scope.kind.value for p in await watcher.refresh()] == ["deployment"]
    assert gauge("all") == 0
