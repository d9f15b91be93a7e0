"""Background tasks that cannot die silently, and the LIFO teardown ``app`` runs at shutdown.

Every long-running loop (dispatcher, outbox, timers, consumers, the HTTP
server) is started with ``guarded``: a crash is logged with its traceback and
sets the daemon's stop event, so a broken component takes the process down
visibly instead of leaving a half-working daemon behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from daemon.logs import get_logger

log = get_logger(__name__)


def guarded(
    coro: Coroutine[Any, Any, Any], *, name: str, stop: asyncio.Event | None = None, tasks: set[asyncio.Task[Any]]
) -> asyncio.Task[Any]:
    """Start ``coro`` as a task that logs (and stops the daemon) if it crashes or exits early."""
    task = asyncio.create_task(coro, name=name)
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            log.error("background task crashed", task=name, error=repr(exc), exc_info=exc)
        elif stop is not None and not stop.is_set():
            log.error("background task exited unexpectedly", task=name)
        if stop is not None and not stop.is_set():
            stop.set()

    task.add_done_callback(done)
    return task


class Teardown:
    """Named shutdown steps run last-registered-first within one overall time budget."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any] | None]]] = []

    def push(self, name: str, step: Callable[[], Awaitable[Any] | None]) -> None:
        """Register ``step`` (sync or async) to run at shutdown, before those registered earlier."""
        self._steps.append((name, step))

    async def run(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._steps:
            name, step = self._steps.pop()
            left = max(0.1, deadline - loop.time())
            try:
                result = step()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout=left)
                log.debug("stopped", component=name)
            except TimeoutError:
                log.warning("shutdown step timed out", component=name, timeout_s=round(left, 1))
            except Exception as exc:
                log.exception("shutdown step failed", component=name, error=repr(exc))


async def cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them; their CancelledError is expected here."""
    for t in list(tasks):
        t.cancel()
    for t in list(tasks):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
