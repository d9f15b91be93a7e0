"""Per-token request rates: a token bucket per bearer token, 429 with Retry-After when it is empty.

Part of the api stage, applied by ``api.auth.require`` right after the token
is known. Which rate a token gets: its own ``rate_limit``, else
``http.rate_limit`` unless the token holds the ``ingest`` scope — ingest
tokens are unlimited unless configured, so an alert storm is never refused by
default. The buckets live in memory per replica: a rate limit protects this
process, it is not a quota.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.config import ApiToken, RateLimit


@dataclass(slots=True)
class _Bucket:
    rate: RateLimit
    tokens: float
    at: float


def rate_for(token: ApiToken, default: RateLimit | None) -> RateLimit | None:
    """The rate that applies to ``token``; None for no limit."""
    if token.rate_limit is not None:
        return token.rate_limit
    return None if "ingest" in token.scopes else default


class Throttle:
    """Admits or refuses one request per call, per token name."""

    def __init__(
        self, tokens: list[ApiToken], default: RateLimit | None, *, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._now = now
        self._buckets: dict[str, _Bucket] = {}
        for token in tokens:
            rate = rate_for(token, default)
            if rate is not None:
                self._buckets[token.name] = _Bucket(rate, float(rate.burst), now())

    def admit(self, name: str) -> float:
        """0 if the request may go ahead (and takes one from the bucket), else seconds until it could."""
        bucket = self._buckets.get(name)
        if bucket is None:
            return 0.0
        now = self._now()
        rate = bucket.rate
        bucket.tokens = min(float(rate.burst), bucket.tokens + (now - bucket.at) * rate.per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate.per_second


def retry_after(wait_s: float) -> str:
    """Retry-After in whole seconds, never 0 (a client told 0 retries at once and is refused again)."""
    return str(max(1, math.ceil(wait_s)))
