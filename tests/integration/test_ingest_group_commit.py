"""Concurrent webhooks share inbox transactions (group commit), and each is still answered for its own alerts.

The production app (``build_app``: every router and middleware) serves the
receivers with uvicorn over a real store, SQLite and PostgreSQL. To gather
requests into one group, the test holds the inbox table the way another
writer would: SQLite's write lock from a second connection, or PostgreSQL's
``LOCK TABLE … EXCLUSIVE``. The first request's write waits on it; the ones
sent meanwhile queue up and are written together in the next transaction.

* requests queued behind a held write are written in one transaction, each
  answered with its own count, every alert in the inbox once;
* two concurrent requests carrying the same alert make one row: one counts it
  accepted, the other a duplicate;
* when the store fails during a group's write, every waiting request gets 503
  with Retry-After, none of them was answered 200 before, and what was answered
  200 before and after is in the inbox;
* a full inbox answers every request of a group 503 (``queue_full``) with
  Retry-After and writes none of them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import select

from daemon.clock import SystemClock
from daemon.ingest import Inbox
from daemon.store.db import Store
from daemon.store.tables import InboxRow
from tests.integration.ingest_server import TOKEN, serve
from tests.webhooks import firing_alert

pytestmark = pytest.mark.integration
# A write of this test's database waiting on the held table (PostgreSQL). Not matched on its text:
# a statement blocked while being prepared still shows the connection's previous one.
WAITING = "SELECT {} FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def body(alerts: list[dict[str, object]]) -> bytes:
    return orjson.dumps({
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "rollbackd",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts,
    })  # fmt: skip


def alerts(run: str, start: int, count: int) -> list[dict[str, object]]:
    return [firing_alert("GroupCommit", "shop", f"web-{i % 3}", i, run) for i in range(start, start + count)]


async def inbox_fingerprints(store: Store) -> list[str]:
    async with store.transaction() as s:
        return [p["fingerprint"] for p in (await s.execute(select(InboxRow.payload).order_by(InboxRow.id))).scalars()]


class Hold:
    """Holds the inbox against writes as a second writer would; ``break_waiting`` fails the write waiting on it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._sqlite: sqlite3.Connection | None = None
        self._pg: asyncpg.Connection | None = None

    def _libpq(self) -> str:
        return self.store.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def take(self) -> None:
        if self.store.is_sqlite:
            self._sqlite = sqlite3.connect(self.store.url.database or "", isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")  # SQLite's one write lock
        else:
            self._pg = await asyncpg.connect(self._libpq())
            await self._pg.execute("BEGIN; LOCK TABLE inbox IN EXCLUSIVE MODE")  # reads pass, writes wait

    async def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("COMMIT")
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            await self._pg.execute("COMMIT")
            await self._pg.close()
            self._pg = None

    async def break_waiting(self) -> None:
        """Make the write now waiting fail: SQLite's busy timeout runs out by itself; on PostgreSQL
        the waiting backend is terminated, as a database restart would."""
        if self._pg is not None:
            await self._pg.execute(WAITING.format("pg_terminate_backend(pid)"))

    async def until_write_waits(self) -> None:
        """Until the inbox write is waiting on the hold (PostgreSQL), or a moment for it to start (SQLite)."""
        if self._pg is None:
            await asyncio.sleep(0.3)
            return
        for _ in range(200):
            waiting = await self._pg.fetchval(WAITING.format("count(*)"))
            if waiting:
                return
            await asyncio.sleep(0.02)
        pytest.fail("the inbox write never waited on the held table")


async def release(hold: Hold, _answers: object) -> None:
    await hold.release()


@asynccontextmanager
async def receiver(store: Store, max_pending: int = 10000) -> AsyncIterator[httpx.AsyncClient]:
    clock = SystemClock()
    async with (
        serve(Inbox(store, clock, max_pending=max_pending), clock) as server,
        httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client,
    ):
        yield client


def post(client: httpx.AsyncClient, payload: bytes) -> Awaitable[httpx.Response]:
    return client.post("/webhooks/alertmanager", content=payload)


async def behind_a_held_write(
    store: Store,
    client: httpx.AsyncClient,
    bodies: list[bytes],
    *,
    then: Callable[[Hold, list[asyncio.Future[httpx.Response]]], Awaitable[Any]],
) -> tuple[httpx.Response, list[httpx.Response]]:
    """A first request whose write waits on a hold, ``bodies`` sent while it waits; ``then(hold, answers)`` decides."""
    hold = Hold(store)
    await hold.take()
    try:
        first = asyncio.ensure_future(post(client, body(alerts(uuid.uuid4().hex[:8], 0, 1))))
        await hold.until_write_waits()
        queued = [asyncio.ensure_future(post(client, b)) for b in bodies]
        await asyncio.sleep(0.3)  # all of them have reached the inbox and wait for the next group
        assert not any(f.done() for f in [first, *queued]), "answered before the held write finished"
        await then(hold, [first, *queued])
        return await first, list(await asyncio.gather(*queued))
    finally:
        await hold.release()


async def test_requests_queued_behind_a_write_are_committed_together_each_with_its_count(store: Store) -> None:
    run = uuid.uuid4().hex[:8]
    bodies = [body(alerts(run, 10 * i, 10)) for i in range(8)]
    async with receiver(store) as client:
        first, answers = await behind_a_held_write(store, client, bodies, then=release)
        # Each request's own count, though they shared a transaction; a redelivery of all is all duplicates.
        assert first.status_code == 200
        assert [(a.status_code, a.json()) for a in answers] == [(200, {"accepted": 10, "duplicates": 0})] * 8
        again = await asyncio.gather(*(post(client, b) for b in bodies))
        assert [a.json() for a in again] == [{"accepted": 0, "duplicates": 10}] * 8
    stored = await inbox_fingerprints(store)
    sent = [str(a["fingerprint"]) for i in range(8) for a in alerts(run, 10 * i, 10)]
    assert sorted(f for f in stored if f in set(sent)) == sorted(sent)
    assert len(stored) == len(set(stored)) == 81


async def test_two_concurrent_requests_with_the_same_alert_make_one_row(store: Store) -> None:
    same = alerts(uuid.uuid4().hex[:8], 0, 1)
    async with receiver(store) as client:
        # Held, so both land in one group; then again unheld, racing each other.
        _, grouped = await behind_a_held_write(store, client, [body(same), body(same)], then=release)
        racing_alert = alerts(uuid.uuid4().hex[:8], 0, 1)
        racing = await asyncio.gather(post(client, body(racing_alert)), post(client, body(racing_alert)))
    for pair in (grouped, racing):
        assert [a.status_code for a in pair] == [200, 200]
        assert sorted((a.json()["accepted"], a.json()["duplicates"]) for a in pair) == [(0, 1), (1, 0)]
    stored = await inbox_fingerprints(store)
    assert stored.count(str(same[0]["fingerprint"])) == 1
    assert stored.count(str(racing_alert[0]["fingerprint"])) == 1


async def test_a_store_failure_during_a_group_commit_answers_every_waiting_request_503(store: Store) -> None:
    run = uuid.uuid4().hex[:8]
    before = [body(alerts(run, 100 + 10 * i, 10)) for i in range(4)]
    failing = [body(alerts(run, 10 * i, 10)) for i in range(6)]

    async def fail_until_answered(hold: Hold, answers: list[asyncio.Future[httpx.Response]]) -> None:
        # The first request's write fails; then the group of the six queued behind it. SQLite's
        # busy timeout (5 s) runs out twice while the write lock is held; PostgreSQL's waiting
        # backend is terminated each time.
        deadline = time.monotonic() + 30
        while not all(a.done() for a in answers) and time.monotonic() < deadline:
            await hold.break_waiting()
            await asyncio.sleep(0.05)

    async with receiver(store) as client:
        answered = await asyncio.gather(*(post(client, b) for b in before))
        assert [a.status_code for a in answered] == [200] * 4
        first, answers = await behind_a_held_write(store, client, failing, then=fail_until_answered)
        assert [a.status_code for a in [first, *answers]] == [503] * 7
        assert all(a.headers.get("Retry-After") for a in [first, *answers])
        assert {a.json()["detail"]["reason"] for a in answers} == {"store"}
        # Nothing was committed: the senders retry, and now every alert is new.
        retried = await asyncio.gather(*(post(client, b) for b in failing))
        assert [(a.status_code, a.json()) for a in retried] == [(200, {"accepted": 10, "duplicates": 0})] * 6
    stored = await inbox_fingerprints(store)
    sent = [str(a["fingerprint"]) for i in range(4) for a in alerts(run, 100 + 10 * i, 10)]
    sent += [str(a["fingerprint"]) for i in range(6) for a in alerts(run, 10 * i, 10)]
    assert sorted(stored) == sorted(sent)


async def test_a_full_inbox_answers_every_request_of_the_group_503_and_writes_none(store: Store) -> None:
    run = uuid.uuid4().hex[:8]
    async with receiver(store, max_pending=20) as client:
        filling = await asyncio.gather(*(post(client, body(alerts(run, 10 * i, 10))) for i in range(2)))
        assert [a.status_code for a in filling] == [200, 200]
        refused = await asyncio.gather(*(post(client, body(alerts(run, 100 + 10 * i, 10))) for i in range(4)))
    assert [a.status_code for a in refused] == [503] * 4
    assert all(a.headers.get("Retry-After") for a in refused)
    assert {a.json()["detail"]["reason"] for a in refused} == {"queue_full"}
    assert len(await inbox_fingerprints(store)) == 20
