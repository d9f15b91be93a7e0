"""Inbox claims: no committed row is skipped whatever the commit order, and each row has one holder.

The commit-order case needs two writers whose transactions overlap, which only
PostgreSQL has (SQLite serialises writers), so those tests take the stack's
PostgreSQL directly; the lease rules run on both backends.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from daemon.clock import FakeClock
from daemon.ingest import Dispatcher, Inbox, InboxClaims, InboxItem
from daemon.ingest.inbox import partition_key
from daemon.store.db import Store
from daemon.store.listen import INBOX_CHANNEL, Listener
from daemon.store.tables import InboxRow
from tests.unit.ingest.helpers import alert

pytestmark = pytest.mark.integration


class Seen:
    def __init__(self) -> None:
        self.ids: list[int] = []

    async def handle(self, item: InboxItem) -> None:
        self.ids.append(item.id)


async def until(check: object, within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.01)


async def test_a_row_that_commits_after_a_higher_id_is_still_dispatched(pg_store: Store, clock: FakeClock) -> None:
    """PostgreSQL hands out ids at insert and commits in any order: id N may appear after N+1 was read."""
    inbox, seen = Inbox(pg_store, clock), Seen()
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="a"), seen, clock, poll_interval_s=3600)
    slow = alert(deployment="slow")
    async with pg_store.transaction() as held:  # a webhook transaction that takes its time to commit
        held.add(
            InboxRow(
                dedupe_key=slow.dedupe_key, kind="alert", source=slow.source,
                partition_key=partition_key(slow), payload=slow.to_json(),
                received_at=clock.now(),
            )
        )  # fmt: skip
        await held.flush()  # the lower id is taken now
        await inbox.accept_alerts([alert(deployment="fast")])  # the higher id commits first
        task = asyncio.create_task(dispatcher.run())
        await until(lambda: len(seen.ids) == 1)
    dispatcher.wake()  # the slow row's commit; in the daemon, its NOTIFY does this
    try:
        await until(lambda: len(seen.ids) == 2)
    finally:
        await dispatcher.stop()
        await task
    assert seen.ids == sorted(seen.ids, reverse=True)  # the higher id first, then the late one


async def test_sixteen_concurrent_claimers_take_every_row_exactly_once(pg_store: Store, clock: FakeClock) -> None:
    writers = [Inbox(pg_store, clock) for _ in range(4)]
    claimers = [InboxClaims(Inbox(pg_store, clock), clock, holder=f"r{i}") for i in range(16)]

    async def write(w: Inbox, n: int) -> None:
        for batch in range(10):
            await w.accept_alerts([alert(deployment=f"w{n}-{batch}-{k}") for k in range(25)])

    async def claim_until_empty(c: InboxClaims, writing: asyncio.Task[object]) -> list[int]:
        got: list[int] = []
        while True:
            items = await c.claim(7)
            got += [i.id for i in items]
            if not items and writing.done():
                items = await c.claim(7)
                if not items:
                    return got
                got += [i.id for i in items]
            await asyncio.sleep(0)

    writing = asyncio.ensure_future(asyncio.gather(*(write(w, n) for n, w in enumerate(writers))))
    taken = await asyncio.gather(*(claim_until_empty(c, writing) for c in claimers))
    await writing
    every = [i for ids in taken for i in ids]
    assert len(every) == 1000
    assert len(set(every)) == 1000  # no row twice
    assert sum(1 for ids in taken if ids) > 1  # the work really was spread


async def test_a_lapsed_claim_is_taken_over_and_a_held_one_is_not(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    await inbox.accept_alerts([alert(deployment="a"), alert(deployment="b")])
    frozen = InboxClaims(inbox, clock, holder="frozen", lease_s=15)
    standby = InboxClaims(inbox, clock, holder="standby", lease_s=15)
    assert len(await frozen.claim(10)) == 2
    assert await standby.claim(10) == []  # held
    await clock.advance(10)
    assert await frozen.renew() == 2
    await clock.advance(10)
    assert await standby.claim(10) == []  # renewed 10 s ago: still held
    await clock.advance(6)
    assert len(await standby.claim(10)) == 2  # the holder froze past its lease


async def test_release_hands_rows_over_at_once_and_leaves_closed_rows_alone(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    await inbox.accept_alerts([alert(deployment="a"), alert(deployment="b")])
    first = InboxClaims(inbox, clock, holder="first")
    a, _b = await first.claim(10)
    await inbox.mark_processed(a.id)
    assert await first.release() == 1  # only the open one
    again = await InboxClaims(inbox, clock, holder="next").claim(10)
    assert [i.alert.labels["deployment"] for i in again] == ["b"]


async def test_another_replicas_commit_wakes_the_dispatcher_through_notify(pg_store: Store, clock: FakeClock) -> None:
    """The leader's dispatcher polls hourly here: only NOTIFY from the other replica's insert can wake it."""
    leader_inbox, seen = Inbox(pg_store, clock), Seen()
    dispatcher = Dispatcher(InboxClaims(leader_inbox, clock, holder="leader"), seen, clock, poll_interval_s=3600)
    listener = Listener(pg_store, {INBOX_CHANNEL: dispatcher.wake})
    listening = asyncio.create_task(listener.run())
    running = asyncio.create_task(dispatcher.run())
    other_store = Store(str(pg_store.url.render_as_string(hide_password=False)))  # the standby's own pool
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        await dispatcher.wait_idle()
        start = datetime.now(UTC)
        await Inbox(other_store, clock).accept_alerts([alert(deployment="from-standby")])
        await until(lambda: len(seen.ids) == 1, within_s=5)
        took = (datetime.now(UTC) - start).total_seconds()
    finally:
        await dispatcher.stop()
        await running
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await other_store.close()
    assert took < 2.0  # a wake, not the hourly poll
    async with pg_store.transaction() as s:
        left = (await s.execute(select(func.count()).where(InboxRow.processed_at.is_(None)))).scalar_one()
    assert left == 0
