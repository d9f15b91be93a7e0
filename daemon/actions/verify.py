"""Did the rollback work? Seed section 7: health URLs answer as expected, and the metric is back.

Runs a request's ``VerifySpec`` after the rollout: every health check must
answer the expected status with the expected text within its timeout
(retried meanwhile: pods that just became Ready may need a moment), and the
PromQL must satisfy the comparator against the threshold within
``within_s``. No data is never healthy. Queries go through the ``MetricQuery``
protocol so the Prometheus client stays in ``sources``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import httpx

from daemon.clock import Clock
from daemon.errors import RollbackdError
from daemon.model import HealthCheck, VerifySpec

RETRY_S = 2.0


class MetricQuery(Protocol):
    """One instant query; None when the query returns no data."""

    async def value(self, promql: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    detail: str


async def _attempt(http: httpx.AsyncClient, check: HealthCheck, timeout_s: float) -> str | None:
    """None when healthy, else what was wrong."""
    try:
        resp = await http.get(check.url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if resp.status_code != check.expect_status:
        return f"HTTP {resp.status_code}, expected {check.expect_status}"
    if check.expect_body and check.expect_body not in resp.text:
        return f"body lacks {check.expect_body!r}"
    return None


async def check_health(http: httpx.AsyncClient, check: HealthCheck, clock: Clock) -> str | None:
    """Retry one health check until it passes or its timeout is spent; None when healthy."""
    deadline = clock.now().timestamp() + check.timeout_s
    while True:
        remaining = deadline - clock.now().timestamp()
        problem = await _attempt(http, check, max(0.1, remaining))
        if problem is None:
            return None
        remaining = deadline - clock.now().timestamp()
        if remaining <= 0:
            return f"{check.url}: {problem} (after {check.timeout_s:g}s)"
        await clock.sleep(min(RETRY_S, remaining))


async def check_metric(spec: VerifySpec, query: MetricQuery, clock: Clock) -> str | None:
    """Poll the PromQL until the comparator holds against the threshold; None when it does."""
    if spec.promql is None or spec.threshold is None:
        return None
    deadline = clock.now().timestamp() + spec.within_s
    last = "no data"
    while True:
        try:
            value = await query.value(spec.promql)
        except RollbackdError as exc:  # Prometheus unreachable or refusing us: no data, and the reason is kept
            last = str(exc)
        else:
            if value is not None and spec.comparator.holds(value, spec.threshold):
                return None
            last = "no data" if value is None else f"{value:g}"
        remaining = deadline - clock.now().timestamp()
        if remaining <= 0:
            return (
                f"{spec.promql} = {last}, expected {spec.comparator.value} {spec.threshold:g} within {spec.within_s:g}s"
            )
        await clock.sleep(min(RETRY_S, remaining))


async def verify(
    spec: VerifySpec, clock: Clock, query: MetricQuery | None, *, http: httpx.AsyncClient | None = None
) -> VerifyResult:
    """All checks of ``spec`` concurrently; ok only when every one passed."""
    if spec.promql is not None and query is None:
        return VerifyResult(False, f"{spec.promql}: no metric source configured to verify it")
    own = http is None
    client = http or httpx.AsyncClient(follow_redirects=False)
    try:
        checks = [check_health(client, c, clock) for c in spec.health]
        if query is not None:
            checks.append(check_metric(spec, query, clock))
        problems = [p for p in await asyncio.gather(*checks) if p is not None]
    finally:
        if own:
            await client.aclose()
    if problems:
        return VerifyResult(False, "; ".join(problems))
    passed = len(spec.health) + (1 if spec.promql is not None else 0)
    return VerifyResult(True, f"{passed} check(s) passed")
