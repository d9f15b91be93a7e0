"""HTTP receivers for alerts: Alertmanager's webhook and Prometheus' own alert push.

The edge of the pipeline for alerts. Each request is authenticated (bearer
token with scope ``ingest``; optionally an HMAC-SHA256 of the raw body in
``X-Rollbackd-Signature: sha256=<hex>``), size-limited (413, checked on
Content-Length and while reading), must say it is JSON (415), is parsed by
``daemon.sources`` (400 naming the field), each alert is held to
``http.alert_limits`` (``api.alert_limits``: 400 naming the bound, its valid
neighbours still accepted), and written to the durable inbox. The 2xx goes out
only after that write committed; a full inbox answers 503 with Retry-After,
which both Alertmanager and Prometheus retry. Every refusal is counted by
route and reason (``api.rejections``).

Routes: ``POST /webhooks/alertmanager``, ``POST /api/v2/alerts`` and, for a
Prometheus ``path_prefix``, ``POST <prefix>/api/v2/alerts`` (``/prometheus`` by
default; ``make_router`` takes others).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse

from daemon.api.alert_limits import Refusal, split
from daemon.api.auth import require
from daemon.api.rejections import reject, require_json
from daemon.api.state import state_of
from daemon.config import SecretRef, Settings
from daemon.errors import InputError, QueueFullError, TemporaryError
from daemon.ingest.inbox import AcceptResult
from daemon.logs import get_logger
from daemon.metrics import ALERTS_RECEIVED, INPUT_REJECTED, TRUNCATED_ALERTS
from daemon.model import Alert
from daemon.sources.alertmanager import parse_webhook
from daemon.sources.prometheus_push import parse_alerts

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Rollbackd-Signature"
DEFAULT_PUSH_PREFIXES = ("/prometheus",)

_hmac_keys: dict[SecretRef, bytes] = {}


def _reject(
    request: Request, source: str, code: int, reason: str, detail: str, *, headers: dict[str, str] | None = None
) -> HTTPException:
    INPUT_REJECTED.labels(source=source, reason=reason).inc()
    log.info("input rejected", source=source, reason=reason, detail=detail)
    return reject(request, code, reason, detail, headers=headers)


async def _read_body(request: Request, source: str, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes whether or not Content-Length told the truth."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _reject(request, source, 400, "bad_content_length", "Content-Length is not a number") from None
        if size > limit:
            raise _reject(
                request, source, 413, "body_too_large", f"body of {size} bytes exceeds the limit of {limit} bytes"
            )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _reject(request, source, 413, "body_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _hmac_key(ref: SecretRef) -> bytes:
    # Read once per secret reference: the file lives on a mounted Secret, not worth a read per request.
    if ref not in _hmac_keys:
        _hmac_keys[ref] = ref.read().encode()
    return _hmac_keys[ref]


def _check_signature(request: Request, settings: Settings, source: str, body: bytes) -> None:
    ref = settings.http.webhook_hmac_secret
    if ref is None:
        return
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        raise _reject(request, source, 401, "missing_signature", f"{SIGNATURE_HEADER} header is required")
    algo, _, given = header.partition("=")
    expected = hmac.new(_hmac_key(ref), body, hashlib.sha256).hexdigest()
    if algo.strip().lower() != "sha256" or not hmac.compare_digest(given.strip().lower(), expected):
        raise _reject(request, source, 403, "bad_signature", f"{SIGNATURE_HEADER} does not match the body")


async def _accept(request: Request, source: str, alerts: Sequence[Alert]) -> JSONResponse:
    """Write the alerts within bounds to the inbox; 200 only once committed (400 naming any refused
    alert after the others committed), 503 with Retry-After if they cannot be written."""
    kept, refused = split(alerts, state_of(request).settings.http.alert_limits)
    result = await _write(request, source, kept)
    if refused:
        raise _refuse(request, source, refused, result.accepted, result.duplicates)
    return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})


def _refuse(request: Request, source: str, refused: list[Refusal], accepted: int, duplicates: int) -> HTTPException:
    """400 naming the first refused alert's bound, listing the refused ones and counting what was accepted."""
    first = refused[0]
    more = f" (and {len(refused) - 1} more alerts)" if len(refused) > 1 else ""
    message = f"alert {first.index}: {first.problem}{more}"
    _reject(request, source, 400, first.reason, message)  # counted and logged once, with the first reason
    return HTTPException(
        400,
        detail={
            "reason": first.reason, "message": message, "refused": [r.to_json() for r in refused[:20]],
            "accepted": accepted, "duplicates": duplicates,
        },
    )  # fmt: skip


async def _write(request: Request, source: str, alerts: Sequence[Alert]) -> AcceptResult:
    inbox = state_of(request).inbox
    if not alerts:
        return AcceptResult(0, 0)
    try:
        result = await inbox.accept_alerts(alerts)
    except QueueFullError as exc:
        retry_after = str(max(1, math.ceil(exc.delay or 1.0)))
        raise _reject(request, source, 503, exc.reason, str(exc), headers={"Retry-After": retry_after}) from None
    except TemporaryError as exc:
        log.warning("inbox unavailable", source=source, error=str(exc))
        raise reject(
            request,
            status.HTTP_503_SERVICE_UNAVAILABLE,
            exc.reason,
            "inbox unavailable, retry later",
            headers={"Retry-After": "5"},
        ) from None
    if result.accepted:
        ALERTS_RECEIVED.labels(source=source, outcome="accepted").inc(result.accepted)
    if result.duplicates:
        ALERTS_RECEIVED.labels(source=source, outcome="duplicate").inc(result.duplicates)
    return result


async def _body(request: Request, source: str) -> bytes:
    settings = state_of(request).settings
    body = await _read_body(request, source, settings.http.max_body_bytes)
    _check_signature(request, settings, source, body)
    return body


async def receive_alertmanager(request: Request) -> JSONResponse:
    """Alertmanager webhook, payload version 4."""
    source = "alertmanager"
    body = await _body(request, source)
    try:
        batch = parse_webhook(body)
    except InputError as exc:
        raise _reject(request, source, 400, exc.reason, str(exc)) from None
    if batch.truncated_alerts > 0:
        # Alertmanager's max_alerts cut the group: those alerts never reach us, so say so loudly.
        TRUNCATED_ALERTS.inc(batch.truncated_alerts)
        log.warning(
            "alertmanager truncated alerts",
            truncated=batch.truncated_alerts,
            group_key=batch.group_key,
            receiver=batch.receiver,
        )
    return await _accept(request, source, batch.alerts)


async def receive_prometheus(request: Request) -> JSONResponse:
    """Prometheus' alert push (the Alertmanager v2 ``POST /api/v2/alerts`` body)."""
    source = "prometheus"
    body = await _body(request, source)
    try:
        alerts = parse_alerts(body, state_of(request).clock.now())
    except InputError as exc:
        raise _reject(request, source, 400, exc.reason, str(exc)) from None
    return await _accept(request, source, alerts)


def make_router(push_prefixes: Sequence[str] = DEFAULT_PUSH_PREFIXES) -> APIRouter:
    """The receivers, with Prometheus' push also under each of ``push_prefixes`` (its ``path_prefix``)."""
    guard: list[Any] = [Depends(require("ingest")), Depends(require_json)]  # in this order: 401 before 415
    api = APIRouter(tags=["ingest"], dependencies=guard)
    handlers: list[tuple[str, Callable[[Request], Any], str]] = [
        ("/webhooks/alertmanager", receive_alertmanager, "Receive an Alertmanager webhook (version 4)"),
        ("/api/v2/alerts", receive_prometheus, "Receive alerts pushed by Prometheus"),
    ]
    for prefix in push_prefixes:
        clean = "/" + prefix.strip("/")
        handlers.append(
            (f"{clean}/api/v2/alerts", receive_prometheus, f"Receive alerts pushed by Prometheus ({clean})")
        )
    for path, endpoint, summary in handlers:
        api.add_api_route(path, endpoint, methods=["POST"], summary=summary, include_in_schema=True)
    return api


router = make_router()
