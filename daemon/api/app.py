"""Assembles the FastAPI application from the routers each stage contributes.

The components arrive in ``state`` (see docs/development.md for the names)
and are set on ``app.state``; nothing here creates them. Every request is
counted by route template and status, and bodies are limited before any
handler reads them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from daemon import __version__
from daemon.api import health, incidents, pagerduty, rules, slack, webhooks
from daemon.api.limits import BodyLimitMiddleware
from daemon.errors import TemporaryError
from daemon.metrics import HTTP_REQUESTS, INPUT_REJECTED
from daemon.redact import redact

DESCRIPTION = """\
rollbackd's HTTP API. Webhooks from Alertmanager and Prometheus, incidents,
approvals, acknowledgements, rule status and reload, Slack and PagerDuty
callbacks, health and metrics. Bearer tokens carry scopes: `read`, `ack`,
`approve`, `admin`, `ingest`. Slack and PagerDuty callbacks are verified by
their signatures instead.
"""


def build_app(state: Mapping[str, Any], *, max_body_bytes: int = 1 << 20) -> FastAPI:
    app = FastAPI(title="rollbackd", version=__version__, description=DESCRIPTION)
    for name, value in state.items():
        setattr(app.state, name, value)
    for module in (health, webhooks, incidents, rules, slack, pagerduty):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(TemporaryError, _temporary_error)
    app.middleware("http")(_count_requests)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    return app


async def _count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    HTTP_REQUESTS.labels(route=path, status=str(response.status_code)).inc()
    return response


async def _temporary_error(_request: Request, exc: Exception) -> JSONResponse:
    """Any route whose work hit a passing failure (the store unreachable): 503, and when to try again."""
    assert isinstance(exc, TemporaryError)  # noqa: S101 - registered for this type only
    retry_after = str(max(1, math.ceil(exc.delay or 5.0)))
    return JSONResponse(
        status_code=503,
        content={"detail": "temporarily unavailable, retry later", "reason": exc.reason},
        headers={"Retry-After": retry_after},
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """400 (not FastAPI's 422) naming each bad field; input values are not echoed back."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
        for e in exc.errors()
    ]
    route = request.scope.get("route")
    INPUT_REJECTED.labels(source=getattr(route, "path", "http"), reason="invalid_body").inc()
    return JSONResponse(status_code=400, content=redact({"detail": "invalid request", "errors": errors}))
