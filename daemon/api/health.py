"""Liveness, readiness and metrics: what Kubernetes probes and Prometheus scrapes.

``/healthz`` answers while the event loop runs. ``/readyz`` answers 200 only
when the rules are loaded, the store answers and leadership is known, and
says which check failed otherwise. It also shows each supervised source (the
Kafka deploy consumer): its state (``running``, ``connecting``, ``failing``,
``restarting``), lag, restarts and last error. A source that is down does not
fail readiness — alerts must still be accepted — but it is in the answer
within seconds, and ``rollbackd status`` shows it in red. ``/metrics``
renders ``daemon.metrics``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.api.state import state_of
from daemon.errors import RollbackdError
from daemon.metrics import REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the daemon's event loop answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: rules loaded, store reachable, leadership known")
async def readyz(request: Request) -> JSONResponse:
    state = state_of(request)
    checks: dict[str, Any] = {}
    checks["rules"] = "ok" if state.rules.current.rule_count > 0 else "no rules loaded"
    try:
        await state.store.ping()
        checks["store"] = "ok"
    except RollbackdError as exc:
        checks["store"] = str(exc)
    leader = state.leader
    if leader is None or leader.known:
        checks["leadership"] = "ok"
    else:
        checks["leadership"] = "unknown"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    if leader is not None:
        body["leader"] = leader.is_leader
    body["dry_run"] = state.dry_run
    if state.pause_watcher is not None:  # this replica's view, at most a second old; never fails readiness
        pauses = state.pause_watcher.current
        body["automation"] = {
            "paused": bool(pauses),
            "pauses": [p.to_json(state.clock.now()) for p in pauses],
        }
    if state.sources:
        body["sources"] = {h.name: h.as_json() for h in (s.health() for s in state.sources)}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
