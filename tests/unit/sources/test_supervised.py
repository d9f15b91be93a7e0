"""The supervisor: a source loop that ends by itself is restarted with backoff, counted and reported."""

from __future__ import annotations

import asyncio

from daemon.clock import FakeClock
from daemon.metrics import KAFKA_CONSUMER_RESTARTS, KAFKA_CONSUMER_UP
from daemon.sources.supervised import Supervisor


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_crashing_loop_is_restarted_with_growing_backoff_and_reported(clock: FakeClock) -> None:
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        supervisor.report("running", lag=runs)
        if runs <= 3:
            raise RuntimeError(f"boom {runs}")
        await asyncio.Event().wait()

    supervisor = Supervisor("test-source", run, clock)
    restarts = KAFKA_CONSUMER_RESTARTS.labels(consumer="test-source")._value.get()
    supervisor.start()
    await _settle()
    health = supervisor.health()
    assert (health.state, health.restarts, health.error) == ("restarting", 1, "crashed: RuntimeError: boom 1")
    assert KAFKA_CONSUMER_UP.labels(consumer="test-source")._value.get() == 0
    await clock.advance(0.9)
    assert runs == 1  # the first backoff is 1 s
    await clock.advance(0.1)
    await _settle()
    assert (runs, supervisor.health().restarts) == (2, 2)
    await clock.advance(2.0)  # then 2 s
    await _settle()
    assert runs == 3
    await clock.advance(4.0)  # then 4 s, and the fourth run stays up
    await _settle()
    health = supervisor.health()
    assert (runs, health.state, health.restarts, health.lag, health.error) == (4, "running", 3, 4, None)
    assert KAFKA_CONSUMER_RESTARTS.labels(consumer="test-source")._value.get() - restarts == 3
    assert KAFKA_CONSUMER_UP.labels(consumer="test-source")._value.get() == 1
    await supervisor.stop()
    assert supervisor.health().state == "stopped"
    assert not supervisor.running


async def test_stop_cancels_the_loop_and_does_not_count_a_restart(clock: FakeClock) -> None:
    stopped = asyncio.Event()

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    supervisor = Supervisor("test-stop", run, clock)
    supervisor.start()
    await _settle()
    await supervisor.stop()
    assert stopped.is_set()
    assert supervisor.restarts == 0
