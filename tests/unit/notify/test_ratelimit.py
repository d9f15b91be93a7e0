"""The per-key sliding window that keeps PagerDuty under ~120 events a minute."""

from __future__ import annotations

import asyncio

import pytest

from daemon.clock import FakeClock
from daemon.errors import TemporaryError
from daemon.notify.ratelimit import SlidingWindowLimiter


def test_window_never_exceeds_the_limit_per_key() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock, limit=120, window_s=60, max_wait_s=120)
    waits = [limiter.reserve("checkout") for _ in range(121)]
    assert waits[:120] == [0.0] * 120
    assert waits[120] == 60.0, "the 121st waits for the first to leave the window"
    assert limiter.reserve("payments") == 0.0, "keys are independent"


def test_a_long_wait_is_handed_back_as_a_retry_delay() -> None:
    limiter = SlidingWindowLimiter(FakeClock(), limit=2, window_s=60, max_wait_s=10)
    limiter.reserve("k")
    limiter.reserve("k")
    with pytest.raises(TemporaryError) as info:
        limiter.reserve("k")
    assert info.value.delay == 60.0
    assert info.value.reason == "rate_limited_local"


async def test_acquire_waits_on_the_clock() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock, limit=1, window_s=1, max_wait_s=5)
    await limiter.acquire("k")
    start = clock.now()
    task = asyncio.create_task(limiter.acquire("k"))
    await asyncio.sleep(0)
    assert not task.done()
    await clock.advance(1)
    await task
    assert (clock.now() - start).total_seconds() == 1
