"""Slack interactivity: the Acknowledge / Approve / Reject buttons and the approval modal.

``POST /slack/interactivity`` verifies ``X-Slack-Signature`` (v0, HMAC-SHA256
of ``v0:{timestamp}:{raw body}`` with the signing secret) and refuses
timestamps more than 5 minutes away (401). The Slack user must map to a
configured approver; anyone else gets an ephemeral "not authorised" and
nothing happens. Slack wants an answer within 3 s, so acknowledge and reject
run as background tasks after the reply; Approve opens a modal at once (the
``trigger_id`` expires in 3 s) and its submission is checked inline with a
bound, so a wrong code is shown in the modal. The code is never logged and
never appears in any message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from daemon.api.state import state_of
from daemon.config import ApproverSettings, Settings
from daemon.errors import ConfigError, PermanentError, RollbackdError
from daemon.logs import get_logger
from daemon.metrics import INPUT_REJECTED
from daemon.notify import slack_render
from daemon.notify.slack import make_web_client, map_slack_error
from daemon.notify.text import escape

from .responders import IncidentResponder, approver_by_slack_user

router = APIRouter(tags=["slack"])
log = get_logger(__name__)

MAX_SKEW_S = 300.0
INLINE_BUDGET_S = 2.5  # Slack gives up on an interaction after 3 s
CHECK_BUDGET_S = 0.5  # the "already approved" look-up must leave views.open its time
NOT_AUTHORISED = "You are not authorised to act on rollbackd incidents."

_pending: set[asyncio.Task[Any]] = set()


class _Ref(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str = ""


class _Action(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    action_id: str
    value: str | None = None


class Interaction(BaseModel):
    """The parts of Slack's interaction payload we use; Slack's format grows, so extras are allowed."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    user: _Ref
    trigger_id: str | None = None
    channel: _Ref | None = None
    actions: list[_Action] = []
    view: dict[str, Any] | None = None


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_slack_request(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: datetime) -> None:
    """Raise 401 unless the signature is Slack's and the timestamp is within 5 minutes."""
    try:
        ts = float(timestamp or "")
    except ValueError:
        ts = float("nan")
    if not abs(now.timestamp() - ts) <= MAX_SKEW_S:  # also refuses NaN
        INPUT_REJECTED.labels(source="slack", reason="stale_timestamp").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="stale or missing X-Slack-Request-Timestamp")
    expected = slack_signature(secret, timestamp or "", body)
    if not signature or not hmac.compare_digest(expected.encode(), signature.encode()):
        INPUT_REJECTED.labels(source="slack", reason="bad_signature").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="X-Slack-Signature does not verify")


def _parse(body: bytes) -> Interaction:
    try:
        form = urllib.parse.parse_qs(body.decode(), strict_parsing=False)
        return Interaction.model_validate(json.loads(form["payload"][0]))
    except (KeyError, IndexError, UnicodeDecodeError, json.JSONDecodeError, ValidationError):
        INPUT_REJECTED.labels(source="slack", reason="bad_payload").inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="expected a form field 'payload' with JSON") from None


@router.post("/slack/interactivity", summary="Slack buttons and modals (signed by Slack)")
async def interactivity(request: Request, background: BackgroundTasks) -> Response:
    settings = state_of(request).settings
    if settings.slack.signing_secret is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Slack signing secret is not configured")
    body = await request.body()
    verify_slack_request(
        settings.slack.signing_secret.read(),
        request.headers.get("x-slack-request-timestamp"),
        request.headers.get("x-slack-signature"),
        body,
        state_of(request).clock.now(),
    )
    event = _parse(body)
    approver = approver_by_slack_user(settings.approvers, event.user.id)
    if event.type == "view_submission":
        return await _view_submission(request, event, approver)
    if event.type != "block_actions" or not event.actions:
        return Response(status_code=200)
    parsed = slack_render.parse_action_id(event.actions[0].action_id)
    if parsed is None:
        return Response(status_code=200)
    verb, incident_id = parsed
    channel_id = event.channel.id if event.channel else ""
    if approver is None:
        log.warning("slack action by an unmapped user refused", slack_user=event.user.id, verb=verb)
        INPUT_REJECTED.labels(source="slack", reason="unmapped_user").inc()
        background.add_task(_ephemeral, settings, channel_id, event.user.id, NOT_AUTHORISED)
        return Response(status_code=200)
    if verb == "approve":
        already = await _already_approved(state_of(request).incidents, incident_id, approver.name)
        if already:  # a second press by the same approver: say so, no modal, no code typed for nothing
            background.add_task(_ephemeral, settings, channel_id, event.user.id, already)
        else:
            await _open_modal(settings, event, incident_id)
        return Response(status_code=200)
    presser = _Presser(approver.name, event.user.id, channel_id)
    background.add_task(_act, state_of(request).incidents, settings, verb, incident_id, presser)
    return Response(status_code=200)


@dataclass(frozen=True, slots=True)
class _Presser:
    """Who pressed a button, and where to answer them."""

    approver: str
    user_id: str
    channel_id: str


async def _act(responder: IncidentResponder, settings: Settings, verb: str, incident_id: str, who: _Presser) -> None:
    """Acknowledge or reject after Slack has its answer; failures are told to the presser."""
    try:
        if verb == "ack":
            await responder.acknowledge(incident_id, who.approver, via="slack")
        else:
            await responder.reject_verified(incident_id, who.approver, via="slack")
        log.info("slack action applied", verb=verb, incident_id=incident_id, approver=who.approver)
    except RollbackdError as exc:
        log.warning("slack action refused", verb=verb, incident_id=incident_id, reason=exc.reason)
        refused = escape(f"Could not {verb} incident {incident_id}: {exc}")
        await _ephemeral(settings, who.channel_id, who.user_id, refused)


async def _already_approved(responder: IncidentResponder, incident_id: str, approver: str) -> str | None:
    """"already approved" with when, if ``approver`` approved this incident; None otherwise or if unknown in time."""
    try:
        record = await asyncio.wait_for(responder.get(incident_id), timeout=CHECK_BUDGET_S)
    except (RollbackdError, TimeoutError):
        return None  # the modal opens; the approval itself is refused if it is a repeat
    mine = [a for a in record.verdicts("approve") if a.approver == approver]
    if not mine:
        return None
    at = mine[0].at.astimezone(UTC)
    return escape(f"You already approved incident {incident_id} (as {mine[0].role}, {at:%Y-%m-%d %H:%M} UTC).")


async def _open_modal(settings: Settings, event: Interaction, incident_id: str) -> None:
    if not event.trigger_id:
        return
    try:
        web = make_web_client(settings.slack)
        await asyncio.wait_for(
            web.views_open(trigger_id=event.trigger_id, view=slack_render.approval_modal(incident_id, incident_id)),
            timeout=INLINE_BUDGET_S,
        )
    except ConfigError as exc:
        log.exception("cannot open the approval modal", reason=exc.reason)
    except Exception as exc:  # noqa: BLE001 - any client failure is reported the same way
        log.warning("views.open failed", reason=map_slack_error("views.open", exc).reason)


async def _view_submission(request: Request, event: Interaction, approver: ApproverSettings | None) -> Response:
    view = event.view or {}
    if view.get("callback_id") != slack_render.APPROVE_CALLBACK or approver is None:
        INPUT_REJECTED.labels(source="slack", reason="unmapped_user").inc()
        return _modal_error(NOT_AUTHORISED)
    incident_id = str(view.get("private_metadata") or "")
    code = _submitted_code(view)
    if not incident_id or not code:
        return _modal_error("Enter your approval code.")
    responder = state_of(request).incidents
    task = asyncio.ensure_future(responder.approve(incident_id, approver.name, code, via="slack"))
    done, _ = await asyncio.wait({task}, timeout=INLINE_BUDGET_S)
    if not done:
        # Still checking (e.g. a slow store): let it finish; the outbox will update the message.
        _pending.add(task)
        task.add_done_callback(_finished_late)
        return JSONResponse({"response_action": "clear"})
    exc = task.exception()
    if isinstance(exc, PermanentError):
        log.warning("slack approval refused", incident_id=incident_id, approver=approver.name, reason=exc.reason)
        return _modal_error(str(exc) or "approval refused")
    if exc is not None:
        log.warning("slack approval failed", incident_id=incident_id, error=type(exc).__name__)
        return _modal_error("rollbackd could not record the approval; try again.")
    log.info("slack approval recorded", incident_id=incident_id, approver=approver.name)
    return JSONResponse({"response_action": "clear"})


def _submitted_code(view: dict[str, Any]) -> str:
    try:
        return str(view["state"]["values"][slack_render.CODE_BLOCK][slack_render.CODE_ACTION].get("value") or "")
    except (KeyError, TypeError, AttributeError):
        return ""


def _finished_late(task: asyncio.Task[Any]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("late slack approval failed", error=type(task.exception()).__name__)


def _modal_error(message: str) -> JSONResponse:
    return JSONResponse({"response_action": "errors", "errors": {slack_render.CODE_BLOCK: message[:150]}})


async def _ephemeral(settings: Settings, channel_id: str, user_id: str, text: str) -> None:
    if not channel_id:
        return
    try:
        web = make_web_client(settings.slack)
        await web.chat_postEphemeral(channel=channel_id, user=user_id, text=text)
    except Exception as exc:  # noqa: BLE001 - a reply that cannot be shown is logged, never raised
        log.warning("ephemeral reply failed", error=type(exc).__name__)
