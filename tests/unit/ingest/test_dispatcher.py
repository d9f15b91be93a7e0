"""The dispatcher: per-key order, parallel keys with a bound, retries, recorded failures, crash recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import select

from daemon.clock import FakeClock
from daemon.errors import PermanentError, TemporaryError
from daemon.ingest import Dispatcher, Inbox, InboxClaims, InboxItem
from daemon.store.db import Store
from daemon.store.tables import InboxRow
from tests.inbox_util import unprocessed

from .helpers import alert


class Recorder:
    """A Handler that records what it saw; ``gate`` holds items until released; ``script`` raises."""

    def __init__(self) -> None:
        self.seen: list[InboxItem] = []
        self.active = 0
        self.max_active = 0
        self.gate: asyncio.Event | None = None
        self.script: dict[str, list[Exception]] = {}

    async def handle(self, item: InboxItem) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            key = item.alert.labels.get("deployment", "")
            errors = self.script.get(key, [])
            if errors:
                raise errors.pop(0)
            self.seen.append(item)
        finally:
            self.active -= 1


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield task
    finally:
        await dispatcher.stop()
        await task


async def until(check: Callable[[], bool]) -> None:
    """Poll (store I/O is real, time is fake) until ``check`` holds; fail after 10 s of wall time."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_one_key_in_order_and_every_item_once(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    await inbox.accept_alerts([alert(starts_min=i) for i in range(5)])
    await inbox.accept_alerts([alert(starts_min=i) for i in range(5)])  # redelivered: no second effect
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await dispatcher.wait_idle()
    assert [i.alert.starts_at.minute for i in handler.seen] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert await unprocessed(inbox, 10) == []


async def test_different_keys_run_in_parallel_up_to_the_bound(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    handler.gate = asyncio.Event()
    await inbox.accept_alerts([alert(deployment=f"d{i}") for i in range(6)])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock, concurrency=3)
    async with running(dispatcher):
        await until(lambda: handler.active == 3)
        await asyncio.sleep(0.1)
        assert handler.active == 3  # the bound holds while three are stuck
        handler.gate.set()
        await dispatcher.wait_idle()
    assert handler.max_active == 3
    assert len(handler.seen) == 6


async def test_a_stuck_key_does_not_hold_up_another(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    handler.script["slow"] = [TemporaryError("downstream busy", delay=30)]
    await inbox.accept_alerts([alert(deployment="slow"), alert(deployment="slow", starts_min=1)])
    await inbox.accept_alerts([alert(deployment="fast")])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await until(lambda: len(handler.seen) == 1)
        assert handler.seen[0].alert.labels["deployment"] == "fast"
        for _ in range(100):  # the retry after 30 s, then the second "slow" item in order
            if len(handler.seen) == 3:
                break
            await clock.advance(30)
            await asyncio.sleep(0.01)
        assert len(handler.seen) == 3
    assert [i.alert.starts_at.minute for i in handler.seen[1:]] == [0, 1]  # type: ignore[union-attr]


async def test_permanent_failure_is_recorded_and_the_key_goes_on(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    handler.script["web"] = [PermanentError("rule exploded", reason="rule_error")]
    await inbox.accept_alerts([alert(), alert(starts_min=1)])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await dispatcher.wait_idle()
    assert [i.alert.starts_at.minute for i in handler.seen] == [1]  # type: ignore[union-attr]
    async with store.transaction() as s:
        errors = [r.error for r in (await s.execute(select(InboxRow).order_by(InboxRow.id))).scalars()]
    assert errors == ["rule_error: rule exploded", None]


async def test_a_handler_bug_is_recorded_not_retried_forever(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    handler.script["web"] = [KeyError("oops")]
    await inbox.accept_alerts([alert()])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await dispatcher.wait_idle()
    assert handler.seen == []
    assert await unprocessed(inbox, 10) == []


async def test_rows_left_by_a_crash_are_handled_by_the_next_run(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    handler.gate = asyncio.Event()  # the first daemon never finishes handling
    await inbox.accept_alerts([alert(), alert(deployment="api")])
    first = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(first):
        await until(lambda: handler.active >= 1)
    assert handler.seen == []  # "killed" mid-handling: nothing was marked processed
    handler.gate = None
    fresh = Inbox(store, clock)
    second = Dispatcher(InboxClaims(fresh, clock, holder="test"), handler, clock)
    async with running(second):
        await second.wait_idle()
    assert sorted(i.alert.labels["deployment"] for i in handler.seen) == ["api", "web"]


async def test_wake_picks_up_new_rows_without_waiting_for_the_poll(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock, poll_interval_s=3600)
    async with running(dispatcher):
        await dispatcher.wait_idle()
        await inbox.accept_alerts([alert()])
        await until(lambda: len(handler.seen) == 1)


async def test_a_backlog_longer_than_a_page_is_claimed_page_after_page_without_the_poll(
    store: Store, clock: FakeClock
) -> None:
    # After a full page the dispatcher must claim again at once; the fake clock never lets the poll
    # come, and nothing new is committed to wake it (a backlog left by a storm, or by a stop).
    inbox, handler = Inbox(store, clock), Recorder()
    await inbox.accept_alerts([alert(deployment=f"d{i % 7}", starts_min=i) for i in range(300)])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock, poll_interval_s=3600)
    async with running(dispatcher):
        await until(lambda: len(handler.seen) == 300)
    assert await unprocessed(inbox, 300) == []


async def test_a_backlog_longer_than_the_buffer_is_claimed_again_as_closes_make_room(
    store: Store, clock: FakeClock
) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    await inbox.accept_alerts([alert(deployment=f"d{i % 3}", starts_min=i) for i in range(23)])
    claims = InboxClaims(inbox, clock, holder="test")
    dispatcher = Dispatcher(claims, handler, clock, poll_interval_s=3600, max_buffered=5)
    async with running(dispatcher):
        await until(lambda: len(handler.seen) == 23)
    assert await unprocessed(inbox, 23) == []


class CountingInbox(Inbox):
    """The real inbox, counting close transactions; the first ``fail`` of them fail as if the store were down."""

    def __init__(self, store: Store, clock: FakeClock, *, fail: int = 0) -> None:
        super().__init__(store, clock)
        self.close_calls: list[int] = []
        self.fail = fail

    async def mark_processed_many(self, closed: Sequence[tuple[int, str | None]]) -> int:
        self.close_calls.append(len(closed))
        if self.fail:
            self.fail -= 1
            raise TemporaryError("database is locked", reason="store")
        return await super().mark_processed_many(closed)


async def test_closes_are_written_many_per_transaction(store: Store, clock: FakeClock) -> None:
    inbox, handler = CountingInbox(store, clock), Recorder()
    await inbox.accept_alerts([alert(starts_min=i) for i in range(50)])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await dispatcher.wait_idle()
    assert await unprocessed(inbox, 100) == []
    assert sum(inbox.close_calls) == 50
    assert dispatcher.handled == 50
    assert len(inbox.close_calls) < 50


async def test_closes_that_fail_are_retried_without_handling_again(store: Store, clock: FakeClock) -> None:
    inbox, handler = CountingInbox(store, clock, fail=1), Recorder()
    await inbox.accept_alerts([alert(deployment=f"d{i}") for i in range(3)])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await until(lambda: len(inbox.close_calls) >= 1)
        assert len(await unprocessed(inbox, 10)) == 3  # handled, but not closed yet: still pending
        await clock.advance(2)  # the retry backoff
        await dispatcher.wait_idle()
    assert await unprocessed(inbox, 10) == []
    assert len(handler.seen) == 3


async def test_a_dispatcher_run_again_after_stop_handles_what_stop_cancelled(store: Store, clock: FakeClock) -> None:
    inbox, handler = Inbox(store, clock), Recorder()
    handler.gate = asyncio.Event()  # leadership lost mid-handling
    await inbox.accept_alerts([alert()])
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
    async with running(dispatcher):
        await until(lambda: handler.active >= 1)
    handler.gate = None
    async with running(dispatcher):  # leadership came back: the same dispatcher runs again
        await dispatcher.wait_idle()
    assert len(handler.seen) == 1
    assert await unprocessed(inbox, 10) == []
