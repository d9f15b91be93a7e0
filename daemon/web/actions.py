"""The forms: sign in, sign out, and acknowledge / approve / reject an incident.

Each incident action is the same ``IncidentService`` call the JSON API makes,
with ``via="web"``: the same code check, per-approver lockout and global rate
limit, the same state machine, and the outbox carries the change to Slack and
PagerDuty. The approval code lives only in the request's form; no page,
error or log line repeats it. Success answers 303 back to the incident page;
a refusal re-renders the page with the reason and the API's status code.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import Response

from daemon.api.state import state_of
from daemon.errors import PermanentError
from daemon.incidents.errors import (
    ApproverLockedError,
    IncidentNotFoundError,
    InvalidTransitionError,
    NotPermittedError,
    RateLimitedError,
    WrongCodeError,
)
from daemon.logs import get_logger
from daemon.metrics import INPUT_REJECTED
from daemon.web import render
from daemon.web.access import field, form_user, refuse, safe_next
from daemon.web.identity import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    SIGNIN_SCOPES,
    User,
    clear_session_cookie,
    over_tls,
    session_store,
    set_session_cookie,
)
from daemon.web.pages import incident_page
from daemon.web.sessions import csrf_ok, csrf_token, new_secret

log = get_logger(__name__)
router = APIRouter(include_in_schema=False)

MAX_TOKEN = 512
MAX_CODE = 128


def _status(exc: PermanentError | RateLimitedError) -> int:
    """The API's status for each refusal (``api.incidents``), so both surfaces say the same."""
    for kind, code in (
        (WrongCodeError, status.HTTP_403_FORBIDDEN), (NotPermittedError, status.HTTP_403_FORBIDDEN),
        (ApproverLockedError, status.HTTP_423_LOCKED), (IncidentNotFoundError, status.HTTP_404_NOT_FOUND),
        (InvalidTransitionError, status.HTTP_409_CONFLICT), (RateLimitedError, status.HTTP_429_TOO_MANY_REQUESTS),
    ):  # fmt: skip
        if isinstance(exc, kind):
            return code
    return status.HTTP_400_BAD_REQUEST


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    secret = request.cookies.get(SIGNIN_COOKIE) or new_secret()
    target = safe_next(request.query_params.get("next"))
    page = render.page(request, "signin.html", csrf=csrf_token(secret), next=target, error="")
    _set_signin_cookie(request, page, secret)
    return page


def _set_signin_cookie(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE, secret, max_age=3600, path="/signin", httponly=True, secure=over_tls(request),
        samesite="strict",
    )  # fmt: skip


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    submitted = form.get("csrf")
    target = safe_next(field(form, "next"))
    if not csrf_ok(request.cookies.get(SIGNIN_COOKIE), submitted if isinstance(submitted, str) else None):
        return refuse(request, "The sign-in form was missing its security token. Reload it and try again.", "csrf")
    state = state_of(request)
    principal = state.auth.principal("Bearer " + field(form, "token", MAX_TOKEN))
    if principal is None or not principal.scopes & SIGNIN_SCOPES:
        INPUT_REJECTED.labels(source="web", reason="bad_token").inc()
        log.warning("web sign-in refused", known=principal is not None)
        secret = request.cookies.get(SIGNIN_COOKIE) or new_secret()  # the CSRF check above proved it is there
        page = render.page(
            request, "signin.html", status=401, csrf=csrf_token(secret), next=target,
            error="Unknown token, or it lacks the scope 'responder'.",
        )  # fmt: skip
        _set_signin_cookie(request, page, secret)
        return page
    sessions = session_store(state)
    await sessions.end(request.cookies.get(SESSION_COOKIE))  # a new sign-in never keeps an old session alive
    session = await sessions.create(principal.name, "token")
    log.info("web sign-in", user=principal.name)
    response = render.redirect(target)
    set_session_cookie(request, response, session)
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    checked = await form_user(request)
    if isinstance(checked, Response):
        return checked
    await session_store(state_of(request)).end(request.cookies.get(SESSION_COOKIE))
    response = render.redirect("/signin")
    clear_session_cookie(request, response)
    return response


@router.post("/incidents/{incident_id}/ack")
async def acknowledge(request: Request, incident_id: str) -> Response:
    checked = await form_user(request)
    if isinstance(checked, Response):
        return checked
    user, _ = checked
    try:
        await state_of(request).incidents.acknowledge(incident_id, user.name, via="web")
    except PermanentError as exc:
        return await incident_page(request, incident_id, user, status=_status(exc), error=str(exc))
    return render.redirect(f"/incidents/{incident_id}?done=ack")


async def _verdict(request: Request, incident_id: str, *, reject: bool) -> Response:
    checked = await form_user(request)
    if isinstance(checked, Response):
        return checked
    user, form = checked
    code, role = field(form, "code", MAX_CODE), field(form, "role", 255) or None
    comment = field(form, "reason" if reject else "comment")
    problem = _problem(user, code, comment, reject=reject)
    if problem:
        INPUT_REJECTED.labels(source="web", reason="incomplete_form").inc()
        return await incident_page(request, incident_id, user, status=status.HTTP_400_BAD_REQUEST, error=problem)
    assert user.approver is not None  # noqa: S101 - _problem refused a user who is not an approver
    service = state_of(request).incidents
    verdict = service.reject if reject else service.approve
    try:
        await verdict(incident_id, user.approver, code, role=role, via="web", comment=comment)
    except (PermanentError, RateLimitedError) as exc:
        return await incident_page(request, incident_id, user, status=_status(exc), error=str(exc))
    return render.redirect(f"/incidents/{incident_id}?done={'reject' if reject else 'approve'}")


def _problem(user: User, code: str, comment: str, *, reject: bool) -> str:
    if user.approver is None:
        return f"{user.name} is not a configured approver: approving or rejecting needs one."
    if not code:
        return "Enter your approval code."
    if reject and not comment:
        return "Give a reason for the rejection."
    return ""


@router.post("/incidents/{incident_id}/approve")
async def approve(request: Request, incident_id: str) -> Response:
    return await _verdict(request, incident_id, reject=False)


@router.post("/incidents/{incident_id}/reject")
async def reject(request: Request, incident_id: str) -> Response:
    return await _verdict(request, incident_id, reject=True)
