"""Verification: health URLs against a real local HTTP server, the PromQL through the MetricQuery protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from aiohttp import web

from daemon.actions.verify import VerifyResult, verify
from daemon.clock import FakeClock
from daemon.model import Comparator, HealthCheck, VerifySpec


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """/health answers "healthy"; /ready fails twice, then answers "ready"; /down answers 503."""
    hits = {"ready": 0}

    async def health(_: web.Request) -> web.Response:
        return web.Response(text='{"status": "healthy"}')

    async def ready(_: web.Request) -> web.Response:
        hits["ready"] += 1
        return web.Response(text="ready") if hits["ready"] > 2 else web.Response(status=503, text="starting")

    async def down(_: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/down", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Series:
    """A MetricQuery whose answers come from a list, one per query; the last one repeats."""

    def __init__(self, *values: float | None) -> None:
        self.values = list(values)
        self.queries: list[str] = []

    async def value(self, promql: str) -> float | None:
        self.queries.append(promql)
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


async def run(clock: FakeClock, coro: Coroutine[Any, Any, VerifyResult]) -> VerifyResult:
    """Drive fake time while the verification polls."""
    task = asyncio.create_task(coro)
    for _ in range(400):
        if task.done():
            break
        await asyncio.sleep(0.01)  # let real HTTP I/O happen
        await clock.advance(1)
    return await task


async def test_healthy_after_retries(clock: FakeClock, server: str) -> None:
    spec = VerifySpec(
        health=(
            HealthCheck(f"{server}/health", expect_body="healthy"),
            HealthCheck(f"{server}/ready", expect_body="ready"),
        ),
        promql="error_rate",
        comparator=Comparator.LT,
        threshold=0.05,
        within_s=60,
    )
    metric = Series(0.2, 0.1, 0.01)
    result = await run(clock, verify(spec, clock, metric))
    assert result == VerifyResult(True, "3 check(s) passed")
    assert metric.queries == ["error_rate"] * 3


async def test_failures_say_what_was_wrong(clock: FakeClock, server: str) -> None:
    spec = VerifySpec(
        health=(
            HealthCheck(f"{server}/down", timeout_s=10),
            HealthCheck(f"{server}/health", expect_body="synced", timeout_s=10),
        ),
        promql="error_rate",
        threshold=0.05,
        within_s=30,
    )
    result = await run(clock, verify(spec, clock, Series(0.5)))
    assert not result.ok
    assert f"{server}/down: HTTP 503, expected 200 (after 10s)" in result.detail
    assert "body lacks 'synced'" in result.detail
    assert "error_rate = 0.5, expected < 0.05 within 30s" in result.detail


async def test_no_data_is_never_healthy(clock: FakeClock) -> None:
    spec = VerifySpec(promql="up", comparator=Comparator.GE, threshold=1, within_s=20)
    result = await run(clock, verify(spec, clock, Series(None)))
    assert not result.ok
    assert "up = no data" in result.detail


async def test_promql_without_a_metric_source_fails_verification(clock: FakeClock) -> None:
    result = await verify(VerifySpec(promql="up", threshold=1), clock, None)
    assert not result.ok
    assert "no metric source" in result.detail
