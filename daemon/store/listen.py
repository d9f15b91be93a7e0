"""Replicas wake each other: PostgreSQL ``LISTEN/NOTIFY`` for rows another replica committed.

Part of the store. A write that other replicas must act on at once — an alert
accepted into the inbox by a standby, which the leader's dispatcher handles —
calls ``notify`` inside its transaction; PostgreSQL delivers the notification
only when (and only if) that transaction commits. ``Listener`` holds one
dedicated connection (outside the pool: a pooled connection would be handed to
other work) with ``LISTEN`` on each channel and calls the registered callbacks,
which only set events. When the connection drops it reconnects with capped
backoff and calls every callback once, because notifications sent while it was
away are gone; the poll each worker keeps is the last resort.

SQLite has one process by construction, where the writer's own in-process
callbacks suffice; there ``notify`` does nothing and ``Listener`` is not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from daemon.logs import get_logger
from daemon.store.db import Store

log = get_logger(__name__)

INBOX_CHANNEL = "rollbackd_inbox"
_CONNECT_TIMEOUT_S = 5.0
_CHECK_EVERY_S = 10.0  # a connection that died silently (no FIN) is noticed this fast
_MAX_BACKOFF_S = 10.0


async def notify(target: AsyncSession | AsyncConnection, store: Store, channel: str) -> None:
    """Tell every listening replica about this transaction's rows, once it commits (PostgreSQL only)."""
    if store.is_postgres:
        await target.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


class Listener:
    """``await run()`` listens until cancelled, calling ``callbacks[channel]`` on each notification."""

    def __init__(self, store: Store, callbacks: Mapping[str, Callable[[], None]]) -> None:
        self._url = store.url
        self._callbacks = dict(callbacks)
        self.connected = asyncio.Event()

    def _on_notification(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        callback = self._callbacks.get(channel)
        if callback is not None:
            callback()

    def _wake_all(self) -> None:
        for callback in self._callbacks.values():
            callback()

    async def _connect(self) -> asyncpg.Connection:
        url = self._url
        return await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password, database=url.database,
            timeout=_CONNECT_TIMEOUT_S,
        )  # fmt: skip

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                conn = await self._connect()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                attempt += 1
                delay = min(_MAX_BACKOFF_S, 0.5 * 2**attempt)
                log.warning("store listener cannot connect, retrying", error=type(exc).__name__, delay_s=delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            try:
                await self._listen(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("store listener lost its connection, reconnecting", error=type(exc).__name__)
            finally:
                self.connected.clear()
                if not conn.is_closed():
                    conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        for channel in self._callbacks:
            await conn.add_listener(channel, self._on_notification)
        self.connected.set()
        self._wake_all()  # whatever was notified while no connection listened
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), _CHECK_EVERY_S)
            except TimeoutError:
                await conn.execute("SELECT 1", timeout=_CONNECT_TIMEOUT_S)
