"""A long-running source loop that cannot stop silently: restarted with backoff, its state readable.

The Kafka deploy consumer runs under a ``Supervisor``. If its task ends for
any reason other than ``stop()`` — an exception nobody expected, a
cancellation from outside, or a plain return — the supervisor logs it as an
error with the cause, counts it in ``rollbackd_kafka_consumer_restarts``,
marks the source ``restarting`` and starts it again after a capped backoff
(reset once a run has lasted ``STABLE_AFTER_S``). The loop reports its own
progress (``connecting``, ``running``, ``failing`` with the reason, its lag)
through ``report``; ``health()`` is what ``/readyz`` and ``rollbackd status``
show, so a consumer that is down is visible within seconds, not at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from daemon.clock import Clock
from daemon.logs import get_logger
from daemon.metrics import KAFKA_CONSUMER_LAG, KAFKA_CONSUMER_RESTARTS, KAFKA_CONSUMER_UP

log = get_logger(__name__)

State = Literal["stopped", "connecting", "running", "failing", "restarting"]
RESTART_BASE_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One supervised source as ``/readyz`` shows it."""

    name: str
    state: State
    since: datetime
    restarts: int
    lag: int | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since.isoformat(),
            "restarts": self.restarts,
            "lag": self.lag,
            "error": self.error,
        }


class Supervisor:
    """Runs ``run()`` as task ``name`` until ``stop()``, restarting it whenever it ends by itself."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]], clock: Clock) -> None:
        self.name = name
        self._run = run
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._state: State = "stopped"
        self._since = clock.now()
        self._error: str | None = None
        self._lag: int | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        """Whether the supervisor is alive (the supervised task may be between restarts)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.report("stopped")

    def report(self, state: State, *, error: str | None = None, lag: int | None = None) -> None:
        """The supervised loop says where it is; ``error`` is why it is failing (no secrets in it)."""
        if state != self._state:
            self._state, self._since = state, self._clock.now()
        self._error = error if state != "running" else None
        if lag is not None:
            self._lag = lag
            KAFKA_CONSUMER_LAG.labels(consumer=self.name).set(lag)
        KAFKA_CONSUMER_UP.labels(consumer=self.name).set(1 if state == "running" else 0)

    def health(self) -> SourceHealth:
        return SourceHealth(self.name, self._state, self._since, self.restarts, self._lag, self._error)

    async def _supervise(self) -> None:
        failures = 0
        while True:
            self.report("connecting")
            started = self._clock.now()
            inner = asyncio.create_task(self._run(), name=self.name)
            try:
                await asyncio.wait({inner})  # not ``await inner``: its cancellation must not cancel us
            except asyncio.CancelledError:
                inner.cancel()
                await asyncio.gather(inner, return_exceptions=True)
                raise
            if (self._clock.now() - started).total_seconds() >= STABLE_AFTER_S:
                failures = 0
            failures += 1
            delay = min(RESTART_MAX_S, RESTART_BASE_S * 2 ** (failures - 1))
            error = _ending(inner)
            self.restarts += 1
            KAFKA_CONSUMER_RESTARTS.labels(consumer=self.name).inc()
            self.report("restarting", error=error)
            exc = None if inner.cancelled() else inner.exception()
            log.error("source stopped, restarting", source=self.name, error=error, delay_s=delay, exc_info=exc)
            await self._clock.sleep(delay)


def _ending(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "its task was cancelled"
    exc = task.exception()
    if exc is None:
        return "its task returned"
    return f"crashed: {type(exc).__name__}: {exc}"[:500]
