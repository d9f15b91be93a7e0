"""Assembles the FastAPI application from the routers each stage contributes.

The components arrive as one typed ``ApiState`` (``api.state``), which every
router reads with ``state_of``; nothing here creates them. Every request is
counted by route template and status, every refusal by route and reason
(``api.rejections``), and bodies are limited before any handler reads them.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon import __version__
from daemon.api import automation, health, incidents, pagerduty, rules, slack, webhooks
from daemon.api.limits import BodyLimitMiddleware
from daemon.api.rejections import is_rejection, mark, reason_of
from daemon.api.state import ApiState
from daemon.errors import TemporaryError
from daemon.metrics import HTTP_REJECTED, HTTP_REQUESTS, INPUT_REJECTED
from daemon.redact import redact
from daemon.web import routes as web

DESCRIPTION = """\
rollbackd's HTTP API. Webhooks from Alertmanager and Prometheus, incidents,
approvals, acknowledgements, rule status and reload, Slack and PagerDuty
callbacks, pauses of automation, health and metrics. Bearer tokens carry scopes:
`read`, `ack`, `approve`, `admin`, `ingest`, `control` (pause and resume
automation). Slack and PagerDuty callbacks are verified by their signatures instead.
"""


def build_app(state: ApiState, *, max_body_bytes: int = 1 << 20) -> FastAPI:
    app = FastAPI(title="rollbackd", version=__version__, description=DESCRIPTION)
    app.state.api = state  # read back, typed, by ``state_of``
    for module in (health, webhooks, incidents, rules, slack, pagerduty, automation):
        app.include_router(module.router)
    web.mount(app)  # the incident pages for responders, behind the same middleware (off: web.enabled)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(TemporaryError, _temporary_error)
    # Both pure ASGI: Starlette's BaseHTTPMiddleware would wrap a handler's exception (the body
    # limit's, when a chunked body runs over) in an ExceptionGroup, and the 413 became a 500.
    # The counter is added last, so it is outermost and also counts the body limit's 413s.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(RequestCounter, routes=app.router.routes)
    return app


class RequestCounter:
    """Counts every request by route template and status, and every refusal by route and reason."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers if the app raises before starting a response

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            # The router wrote the matched route into this same scope on its way down.
            path = getattr(scope.get("route"), "path", None) or self._route_of(scope)
            HTTP_REQUESTS.labels(route=path, status=str(status)).inc()
            if is_rejection(status):
                HTTP_REJECTED.labels(route=path, reason=reason_of(scope, status)).inc()

    def _route_of(self, scope: Scope) -> str:
        """The template of the route a request refused before routing (the body limit) was meant for."""
        return _template(self._routes, scope) or "unmatched"


def _template(routes: list[BaseRoute], scope: Scope) -> str | None:
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.FULL:
            continue
        inner = getattr(route, "original_router", None)  # FastAPI wraps each included router
        if inner is not None:
            return _template(list(inner.routes), scope)
        return str(getattr(route, "path", "")) or None
    return None


async def _temporary_error(request: Request, exc: Exception) -> JSONResponse:
    """Any route whose work hit a passing failure (the store unreachable): 503, and when to try again."""
    assert isinstance(exc, TemporaryError)  # noqa: S101 - registered for this type only
    mark(request.scope, exc.reason)
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
    mark(request.scope, "invalid_body")
    return JSONResponse(status_code=400, content=redact({"detail": "invalid request", "errors": errors}))
