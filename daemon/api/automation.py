"""HTTP surface of automation control: the kill switch and the shadow report.

``POST /api/v1/automation/pauses`` pauses automated rollback for a scope,
``POST /api/v1/automation/pauses/{id}/resume`` and
``POST /api/v1/automation/resume`` (every active pause) end pauses — all with
scope ``control`` (or ``admin``), the caller's token name recorded as who did
it. ``GET /api/v1/automation/pauses`` and ``GET /api/v1/automation/shadow``
(scope ``read``) list pauses and report what shadow rules would have done.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from daemon.api.auth import Principal, require
from daemon.api.state import ApiState, state_of
from daemon.control.pauses import MAX_PAUSE, PauseError, Pauses
from daemon.control.shadow import shadow_report
from daemon.scope import Scope

router = APIRouter(prefix="/api/v1/automation", tags=["automation"])


class PauseBody(BaseModel):
    """A pause to create."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str = Field(description="all, namespace:NS, deployment:NS/NAME or rule:NAME.")
    reason: str = Field(min_length=1, max_length=500, description="Why automation must stop; shown to everyone.")
    for_s: float = Field(3600.0, gt=0, le=MAX_PAUSE.total_seconds(), description="How long; it ends by itself.")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        Scope.parse(value)  # ValueError names what is expected
        return value


def _pauses(state: ApiState) -> Pauses:
    return state.pauses if state.pauses is not None else Pauses(state.store, state.clock)


@router.post("/pauses", status_code=201)
async def pause(
    request: Request,
    body: PauseBody,
    who: Principal = Depends(require("control")),  # noqa: B008
) -> dict[str, Any]:
    """Pause automated rollback for ``scope``: decisions are still made and notified, nothing is written."""
    state = state_of(request)
    try:
        created = await _pauses(state).pause(
            Scope.parse(body.scope), body.reason, who.name, timedelta(seconds=body.for_s)
        )
    except PauseError as exc:
        raise HTTPException(400, detail=str(exc)) from None
    return created.to_json(state.clock.now())


@router.post("/pauses/{pause_id}/resume")
async def resume_one(
    request: Request,
    pause_id: str,
    who: Principal = Depends(require("control")),  # noqa: B008
) -> dict[str, Any]:
    """End one active pause."""
    state = state_of(request)
    try:
        ended = await _pauses(state).resume(pause_id, who.name)
    except PauseError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    return {"resumed": [p.to_json(state.clock.now()) for p in ended]}


@router.post("/resume")
async def resume_all(request: Request, who: Principal = Depends(require("control"))) -> dict[str, Any]:  # noqa: B008
    """End every active pause."""
    state = state_of(request)
    ended = await _pauses(state).resume(None, who.name)
    return {"resumed": [p.to_json(state.clock.now()) for p in ended]}


@router.get("/pauses")
async def list_pauses(request: Request, _: Principal = Depends(require("read"))) -> dict[str, Any]:  # noqa: B008
    """Active pauses, and those that ended in the last 24 hours, newest first."""
    state = state_of(request)
    now = state.clock.now()
    pauses = await _pauses(state).listing()
    return {"pauses": [p.to_json(now) for p in pauses], "active": sum(p.active_at(now) for p in pauses)}


@router.get("/shadow")
async def shadow(
    request: Request,
    since_s: float = Query(7 * 86400.0, gt=0, le=366 * 86400.0, description="How far back, in seconds."),
    _: Principal = Depends(require("read")),  # noqa: B008
) -> dict[str, Any]:
    """Per shadow rule: how often it would have rolled back, what, and how its incidents ended."""
    state = state_of(request)
    since = state.clock.now() - timedelta(seconds=since_s)
    rules = await shadow_report(state.store, since)
    return {"since": since.isoformat(), "rules": [r.to_json() for r in rules]}
