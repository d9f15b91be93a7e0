"""Client-side rate limits, so notifiers wait instead of collecting 429s.

PagerDuty's Events API accepts about 120 events a minute per routing key.
``SlidingWindowLimiter`` keeps the send times of the last window per key and
makes a sender wait until the window has room; a wait longer than
``max_wait_s`` is handed back to the outbox as a ``TemporaryError`` with that
delay, so a delivery never holds its claim for minutes.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from daemon.clock import Clock
from daemon.errors import TemporaryError


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions per key in any ``window_s`` seconds."""

    def __init__(self, clock: Clock, *, limit: int = 120, window_s: float = 60.0, max_wait_s: float = 10.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._clock = clock
        self._limit = limit
        self._window = timedelta(seconds=window_s)
        self._max_wait_s = max_wait_s
        self._sends: dict[str, deque[datetime]] = {}

    def reserve(self, key: str) -> float:
        """Book the next send slot for ``key``; returns how long to wait for it (0 if free now)."""
        now = self._clock.now()
        sends = self._sends.setdefault(key, deque())
        while sends and sends[0] <= now - self._window:
            sends.popleft()
        at = now
        if len(sends) >= self._limit:
            # The slot frees when the send `limit` places back leaves the window.
            at = max(now, sends[-self._limit] + self._window)
        wait = (at - now).total_seconds()
        if wait > self._max_wait_s:
            raise TemporaryError(
                f"local rate limit for this key: next slot in {wait:.1f}s", reason="rate_limited_local", delay=wait
            )
        sends.append(at)
        return wait

    async def acquire(self, key: str) -> None:
        """Wait (on the injected clock) until ``key`` may send."""
        wait = self.reserve(key)
        if wait > 0:
            await self._clock.sleep(wait)
