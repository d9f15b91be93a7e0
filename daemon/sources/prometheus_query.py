"""PromQL instant queries against Prometheus, for the poller and for decision-time and verification checks.

prometheus-api-client is synchronous (requests), so every query runs in a
worker thread (``asyncio.to_thread``) under a timeout and never blocks the event
loop. "No data" is an answer of its own: an empty result or a NaN value is
``None`` / an empty list, never 0. Anything that went wrong on the way
(connection, HTTP error, bad response, timeout) is a ``TemporaryError``; callers
treat it as no data too, never as healthy.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_api_client import PrometheusConnect

from daemon.errors import PermanentError, TemporaryError
from daemon.model import frozen_map


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of an instant vector (or the scalar, with no labels) and its value."""

    labels: Mapping[str, str]
    value: float


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _samples(result: Any) -> list[Sample]:
    """Turn the ``data.result`` of an instant query into samples; NaN and Inf count as no data."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        value = _number(result[1])  # scalar or string result: [time, "value"]
        return [] if value is None else [Sample(frozen_map({}), value)]
    if not isinstance(result, list):
        raise TemporaryError(f"prometheus answered an unexpected result {type(result).__name__}", reason="bad_response")
    out: list[Sample] = []
    for series in result:
        if not isinstance(series, dict) or "value" not in series:
            continue  # a matrix (range selector) has "values": not an instant value
        value = _number(series["value"][1])
        if value is not None:
            out.append(Sample(frozen_map(series.get("metric", {})), value))
    return out


class PrometheusQuery:
    """Instant queries with a timeout, off the event loop."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = PrometheusConnect(url=self.url, disable_ssl=False, timeout=timeout)

    def _query(self, promql: str) -> Any:
        return self._client.custom_query(promql, timeout=self.timeout)

    async def samples(self, promql: str) -> list[Sample]:
        """Every series of ``promql`` with a finite value; ``[]`` means no data. Errors are TemporaryError."""
        try:
            async with asyncio.timeout(self.timeout + 1.0):
                result = await asyncio.to_thread(self._query, promql)
        except TimeoutError:
            raise TemporaryError(f"prometheus query timed out after {self.timeout:.0f}s", reason="timeout") from None
        except Exception as exc:
            raise TemporaryError(
                f"prometheus query failed: {type(exc).__name__}: {str(exc)[:200]}", reason="query_failed"
            ) from exc
        return _samples(result)

    async def value(self, promql: str) -> float | None:
        """The single value of ``promql``; None when there is no data.

        A query returning several series is a mistake in the rule (which one decides?):
        PermanentError naming how many.
        """
        found = await self.samples(promql)
        if not found:
            return None
        if len(found) > 1:
            raise PermanentError(
                f"query {promql!r} returned {len(found)} series, expected one (aggregate it, e.g. max(...))",
                reason="multiple_series",
            )
        return found[0].value
