"""Polling for a condition that a daemon under test reaches in its own time.

The condition may block (it usually reads a subprocess's HTTP API or the
cluster), so it runs in a thread; the error names what was awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(what: str, condition: Callable[[], Any], within: float, *, every: float = 0.05) -> Any:
    """The first truthy value of ``condition()`` within ``within`` seconds, else AssertionError naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(every)
