"""PromQL instant queries against Prometheus, for the poller and for decision-time and verification checks.

prometheus-api-client is synchronous (requests), so every query runs in a
worker thread (``asyncio.to_thread``) under a timeout and never blocks the event
loop. "No data" is an answer of its own: an empty result or a NaN value is
``None`` / an empty list, never 0. Anything that went wrong on the way
(connection, HTTP error, bad response, timeout) is a ``TemporaryError``; callers
treat it as no data too, never as healthy.

``PrometheusQuery.from_settings`` is the one place the client is built, for
the poller and for verification (``wiring`` hands the same instance to both):
bearer token or basic auth, extra headers such as Mimir's ``X-Scope-OrgID``,
and TLS with a custom CA, a client certificate and hostname checking
(``sources.credentials``). An answer of 401 or 403, a certificate that does not
verify, or a server that refuses our client certificate (or its absence) is
reported with the setting to check instead of as a bare HTTP error.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from daemon.config import PrometheusSettings
from daemon.errors import ConfigError, PermanentError, TemporaryError
from daemon.model import frozen_map
from daemon.sources.credentials import client_context, read_secret

# A query is retried at most twice within its timeout (the client's default backoff of 1 s, 2 s, 4 s
# outlasted it); a certificate or credential failure gives the same answer every time.
RETRY_STATUSES = (429, 500, 502, 503, 504)


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


class _ContextAdapter(HTTPAdapter):
    """An adapter whose connections use our ``SSLContext`` (client certificate, CA, hostname check)."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        if not self._context.check_hostname:
            kwargs["assert_hostname"] = False  # urllib3 would check the name itself otherwise
        super().init_poolmanager(*args, **kwargs)


class _TlsSession(requests.Session):
    """A session whose adapters carry our TLS context.

    ``PrometheusConnect`` mounts its own retrying ``HTTPAdapter`` on the URL; this keeps its
    retry policy and gives it our context.
    """

    def __init__(self, context: ssl.SSLContext, ca_file: str | None) -> None:
        self._context = context  # before Session.__init__, which mounts its default adapters
        super().__init__()
        self.verify = ca_file or True  # requests loads this bundle into the context as well
        self.mount("https://", _ContextAdapter(context))

    def mount(self, prefix: str, adapter: Any) -> None:
        if type(adapter) is HTTPAdapter:
            adapter = _ContextAdapter(self._context, max_retries=adapter.max_retries)
        super().mount(prefix, adapter)


class PrometheusQuery:
    """Instant queries with a timeout, off the event loop."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = PrometheusConnect(
            url=self.url, headers=dict(headers or {}), auth=auth, session=session, disable_ssl=False, timeout=timeout,
            retry=Retry(total=2, backoff_factor=0.25, status_forcelist=RETRY_STATUSES),
        )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: PrometheusSettings) -> PrometheusQuery:
        """The client for ``prometheus.*``; ``ConfigError`` naming the setting when a secret or file cannot be read."""
        if settings.url is None:
            raise ConfigError("prometheus.url is not set")
        headers = dict(settings.headers)
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {read_secret(settings.bearer_token, 'prometheus.bearer_token')}"
        auth = None
        if settings.basic_auth is not None:
            password = read_secret(settings.basic_auth.password, "prometheus.basic_auth.password")
            auth = (settings.basic_auth.username, password)
        session = None
        if settings.tls is not None:
            context = client_context(settings.tls, "prometheus.tls")
            session = _TlsSession(context, str(settings.tls.ca_file) if settings.tls.ca_file else None)
        return cls(settings.url, settings.query_timeout_s, headers=headers, auth=auth, session=session)

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
            raise _failure(exc) from exc
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


def _failure(exc: Exception) -> TemporaryError:
    """A failed query as an error that says what to check (the client's message never holds a secret)."""
    full = f"{type(exc).__name__}: {exc}"
    text = full if len(full) <= 300 else full[:300] + "…"
    if "Status Code 401" in full or "Status Code 403" in full:
        return TemporaryError(
            f"prometheus refused the query ({text}): check prometheus.basic_auth, prometheus.bearer_token "
            "and prometheus.headers",
            reason="unauthorized",
        )
    if any(alert in full.lower() for alert in ("alert bad certificate", "certificate required", "alert unknown ca")):
        return TemporaryError(
            f"prometheus refused our TLS client certificate ({text}): it wants one it trusts, check "
            "prometheus.tls.cert_file and key_file",
            reason="tls",
        )
    if "CERTIFICATE_VERIFY_FAILED" in full or "certificate verify failed" in full:
        return TemporaryError(
            f"prometheus certificate not trusted ({text}): check prometheus.tls.ca_file and check_hostname",
            reason="tls",
        )
    return TemporaryError(f"prometheus query failed: {text}", reason="query_failed")
