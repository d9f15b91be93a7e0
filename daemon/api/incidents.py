"""HTTP API for incidents: list and read decision records, acknowledge, approve, reject, break-glass.

The service is ``state_of(request).incidents`` (``incidents.IncidentService``).
Approval codes arrive in request bodies only; no response, error or log line
repeats them: a wrong code is 403 with the tries left, a locked-out approver
423, too many failures across approvers 429.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from daemon.api.auth import Principal, require
from daemon.api.rejections import require_json
from daemon.api.state import state_of
from daemon.errors import RollbackdError
from daemon.incidents.errors import (
    ApproverLockedError,
    ConcurrentUpdateError,
    IncidentNotFoundError,
    InvalidTransitionError,
    NotPermittedError,
    RateLimitedError,
    WrongCodeError,
)
from daemon.incidents.service import IncidentService
from daemon.model import Target

router = APIRouter(prefix="/api/v1", tags=["incidents"])
# After the auth dependency in each signature, so an unauthenticated caller gets 401 before 415.
_Json = Annotated[None, Depends(require_json)]

_STATES = Literal[
    "open", "awaiting_approval", "approved", "rolling_back", "verifying",
    "resolved", "rejected", "expired", "failed", "escalated",
]  # fmt: skip


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerdictBody(_Body):
    approver: str = Field(min_length=1, max_length=255)
    code: str = Field(min_length=1, max_length=128, description="TOTP or personal approval code; never echoed.")
    role: str | None = Field(None, max_length=255, description="The role this approval counts for.")
    comment: str = Field("", max_length=2000)


class AckBody(_Body):
    actor: str | None = Field(None, max_length=255, description="Who acknowledges; default: the token's name.")


class ApprovalCode(_Body):
    approver: str = Field(min_length=1, max_length=255)
    code: str = Field(min_length=1, max_length=128)


class RollbackBody(_Body):
    targets: list[str] = Field(
        min_length=1, max_length=50, description="NAMESPACE/NAME (a Deployment) or KIND/NAMESPACE/NAME"
    )
    reason: str = Field(min_length=1, max_length=2000)
    approvals: list[ApprovalCode] = Field(min_length=1, max_length=10)
    to_revision: int | None = Field(
        None, ge=1, description="Undo to this revision (kubectl's --to-revision); one target only. Default: previous."
    )


class IncidentList(_Body):
    incidents: list[dict[str, Any]]


def _service(request: Request) -> IncidentService:
    return state_of(request).incidents


def _error(exc: RollbackdError) -> JSONResponse:
    """The error as HTTP; messages name approvers and incidents, never codes."""
    if isinstance(exc, WrongCodeError):
        return JSONResponse(
            status_code=status.HTTP_403_FORBIDDEN,
            content={"detail": str(exc), "reason": exc.reason, "remaining_tries": exc.remaining},
        )
    if isinstance(exc, ApproverLockedError):
        return JSONResponse(
            status_code=status.HTTP_423_LOCKED,
            content={"detail": str(exc), "reason": exc.reason, "locked_until": exc.until.isoformat()},
        )
    if isinstance(exc, RateLimitedError):
        return JSONResponse(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            content={"detail": str(exc), "reason": exc.reason},
            headers={"Retry-After": str(int(exc.delay or 60))},
        )
    codes = {
        IncidentNotFoundError: status.HTTP_404_NOT_FOUND,
        NotPermittedError: status.HTTP_403_FORBIDDEN,
        InvalidTransitionError: status.HTTP_409_CONFLICT,
        ConcurrentUpdateError: status.HTTP_409_CONFLICT,
    }
    code = next((c for t, c in codes.items() if isinstance(exc, t)), status.HTTP_400_BAD_REQUEST)
    return JSONResponse(status_code=code, content={"detail": str(exc), "reason": exc.reason})


@router.get("/incidents", response_model=IncidentList)  # the documented shape; the body is written directly
async def list_incidents(
    request: Request,
    _p: Annotated[Principal, Depends(require("read"))],
    state: Annotated[_STATES | None, Query()] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    views = await _service(request).list(state=state, open_only=open_only, limit=limit)
    # The records are ours and already JSON-shaped: orjson writes them, where re-validating a page against
    # the response model and the stdlib encoder took ~10x longer; each record's bytes are made once and
    # kept with it, and the reader hands back the same record while its incident is unchanged (issue 19).
    body = orjson.dumps({"incidents": [orjson.Fragment(v.json_bytes()) for v in views]})
    return Response(body, media_type="application/json")


@router.get("/incidents/{incident_id}")
async def get_incident(request: Request, incident_id: str, _p: Annotated[Principal, Depends(require("read"))]) -> Any:
    try:
        return (await _service(request).get(incident_id)).to_json()
    except RollbackdError as exc:
        return _error(exc)


@router.post("/incidents/{incident_id}/ack")
async def ack_incident(
    request: Request,
    incident_id: str,
    principal: Annotated[Principal, Depends(require("ack"))],
    _json: _Json,
    body: AckBody | None = None,
) -> Any:
    actor = (body.actor if body and body.actor else None) or principal.name
    try:
        return (await _service(request).acknowledge(incident_id, actor, via="api")).to_json()
    except RollbackdError as exc:
        return _error(exc)


async def _verdict(request: Request, incident_id: str, body: VerdictBody, *, reject: bool) -> Any:
    service = _service(request)
    verdict = service.reject if reject else service.approve
    try:
        record = await verdict(incident_id, body.approver, body.code, role=body.role, via="api", comment=body.comment)
    except RollbackdError as exc:
        return _error(exc)
    return record.to_json()


@router.post("/incidents/{incident_id}/approve")
async def approve_incident(
    request: Request,
    incident_id: str,
    body: VerdictBody,
    _p: Annotated[Principal, Depends(require("approve"))],
    _json: _Json,
) -> Any:
    return await _verdict(request, incident_id, body, reject=False)


@router.post("/incidents/{incident_id}/reject")
async def reject_incident(
    request: Request,
    incident_id: str,
    body: VerdictBody,
    _p: Annotated[Principal, Depends(require("approve"))],
    _json: _Json,
) -> Any:
    return await _verdict(request, incident_id, body, reject=True)


@router.post("/rollbacks", status_code=status.HTTP_201_CREATED)
async def break_glass_rollback(
    request: Request, body: RollbackBody, _p: Annotated[Principal, Depends(require("approve"))], _json: _Json
) -> Any:
    """Break-glass manual rollback (seed 8.2): every approver's code, the manual quorum, then the rollback."""
    targets = []
    for text in body.targets:
        try:
            targets.append(Target.parse_strict(text))
        except ValueError as exc:
            return JSONResponse(status_code=400, content={"detail": f"target: {exc}"})
    if body.to_revision is not None and len(targets) != 1:
        # Revision numbers are per workload: one number for several would restore arbitrary templates.
        return JSONResponse(status_code=400, content={"detail": "to_revision: names a revision of one target only"})
    try:
        view = await _service(request).manual_rollback(
            targets, body.reason, [(a.approver, a.code) for a in body.approvals], via="api",
            to_revision=body.to_revision,
        )  # fmt: skip
    except RollbackdError as exc:
        return _error(exc)
    location = str(request.url_for("get_incident", incident_id=view.id).path)
    return JSONResponse(view.to_json(), status_code=status.HTTP_201_CREATED, headers={"Location": location})
