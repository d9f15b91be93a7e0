"""Sessions of the incident pages in the store, on SQLite and PostgreSQL: expiry, sign-out, two replicas.

Fake time drives the idle and absolute expiry; two ``SessionStore`` objects
over one database stand for two replicas behind a load balancer.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, inspect, select

from daemon.clock import FakeClock
from daemon.store.db import MIGRATIONS, Store
from daemon.store.tables import WebSessionRow
from daemon.web.sessions import TOUCH_EVERY, SessionStore, csrf_ok, digest

pytestmark = pytest.mark.integration

IDLE_S = 600.0
MAX_S = 3600.0


def _sessions(store: Store, clock: FakeClock) -> SessionStore:
    return SessionStore(store, clock, idle_s=IDLE_S, max_s=MAX_S)


async def _rows(store: Store) -> list[WebSessionRow]:
    async with store.transaction() as s:
        return list((await s.scalars(select(WebSessionRow))).all())


async def test_a_session_is_found_by_its_secret_which_the_store_never_holds(store: Store, clock: FakeClock) -> None:
    sessions = _sessions(store, clock)
    made = await sessions.create("alice", "token")
    found = await sessions.find(made.secret)
    assert found is not None
    assert (found.user, found.via) == ("alice", "token")
    assert found.expires_at == clock.now() + timedelta(seconds=MAX_S)
    [row] = await _rows(store)
    assert row.id == digest(made.secret)
    assert made.secret not in (row.id, row.user_name, row.via)
    assert await sessions.find("not-" + made.secret) is None
    assert await sessions.find(None) is None
    assert csrf_ok(made.secret, found.csrf)
    assert not csrf_ok(made.secret, "0" * 64)
    assert not csrf_ok(None, found.csrf)


async def test_idle_sessions_end_and_use_keeps_them_alive_until_the_absolute_end(
    store: Store, clock: FakeClock
) -> None:
    sessions = _sessions(store, clock)
    idle = await sessions.create("bob", "token")
    used = await sessions.create("alice", "token")
    # Used every 5 minutes: alive past the idle limit, until the absolute end.
    for _ in range(11):
        await clock.advance(300)
        assert await sessions.find(used.secret) is not None
    assert await sessions.find(idle.secret) is None  # unused for 55 minutes > 10
    await clock.advance(300)  # 60 minutes after sign-in
    assert await sessions.find(used.secret) is None
    assert await _rows(store) == []  # both expired rows were deleted on sight


async def test_last_seen_is_written_at_most_every_touch_interval(store: Store, clock: FakeClock) -> None:
    sessions = _sessions(store, clock)
    made = await sessions.create("alice", "token")
    await clock.advance(TOUCH_EVERY.total_seconds() / 3)
    await sessions.find(made.secret)
    [row] = await _rows(store)
    assert row.last_seen_at == row.created_at
    await clock.advance(TOUCH_EVERY.total_seconds())
    await sessions.find(made.secret)
    [row] = await _rows(store)
    assert row.last_seen_at == clock.now()


async def test_sign_out_on_one_replica_ends_the_session_on_the_other(store: Store, clock: FakeClock) -> None:
    replica_a, replica_b = _sessions(store, clock), _sessions(store, clock)
    made = await replica_a.create("alice", "proxy")
    assert (await replica_b.find(made.secret)) is not None
    assert await replica_b.end(made.secret) is True
    assert await replica_a.find(made.secret) is None
    assert await replica_a.end(made.secret) is False


async def test_sign_in_sweeps_expired_sessions(store: Store, clock: FakeClock) -> None:
    sessions = _sessions(store, clock)
    for user in ("a", "b", "c"):
        await sessions.create(user, "token")
    await clock.advance(IDLE_S + 1)
    fresh = await sessions.create("d", "token")
    async with store.transaction() as s:
        left = await s.scalar(select(func.count()).select_from(WebSessionRow))
    assert left == 1
    assert await sessions.find(fresh.secret) is not None


async def _tables(store: Store) -> set[str]:
    async with store.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_the_migration_downgrades_and_upgrades_again(store: Store) -> None:
    def downgrade(sync_conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "b7d2e41c9a05")  # the revision before the sessions table

    assert "web_sessions" in await _tables(store)
    async with store.engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert "web_sessions" not in await _tables(store)
    await store.upgrade()
    assert "web_sessions" in await _tables(store)
    made = await _sessions(store, FakeClock()).create("alice", "token")
    assert made.user == "alice"
