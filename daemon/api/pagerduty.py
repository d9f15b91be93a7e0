"""PagerDuty webhooks (v3): acknowledgements and resolutions made in PagerDuty reach rollbackd.

``POST /pagerduty/webhook`` verifies ``X-PagerDuty-Signature`` (a list of
``v1=<hex>`` HMAC-SHA256 signatures of the raw body; any one made with any
configured secret is accepted, so secrets rotate without downtime), dedupes on
the webhook event id (``receipts``), and turns ``incident.acknowledged`` and
``incident.resolved`` of our alerts (dedup key ``rollbackd-<id>``, which
PagerDuty reports as the incident's ``incident_key``) into an acknowledgement
by the mapped approver, or the PagerDuty user's name. Changes rollbackd made
itself through the Events API come back with a non-user agent and are ignored,
so an ack never echoes. Incidents then enqueue the Slack update.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, ValidationError

from daemon.api.rejections import check_json, mark
from daemon.api.state import state_of
from daemon.errors import PermanentError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import INPUT_REJECTED
from daemon.notify.pagerduty import incident_id_from_dedup_key
from daemon.store.db import Store
from daemon.store.errors import ConstraintError
from daemon.store.tables import ReceiptRow

from .responders import approver_by_pagerduty_user

router = APIRouter(tags=["pagerduty"])
log = get_logger(__name__)

HANDLED = {"incident.acknowledged", "incident.resolved"}


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Agent(_Tolerant):
    id: str = ""
    type: str = ""
    summary: str = ""


class IncidentData(_Tolerant):
    id: str = ""
    incident_key: str | None = None
    status: str = ""


class WebhookEvent(_Tolerant):
    id: str
    event_type: str
    resource_type: str = ""
    agent: Agent | None = None
    data: IncidentData | None = None


class Webhook(_Tolerant):
    event: WebhookEvent


def pagerduty_signature(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_pagerduty_request(secrets: list[str], header: str | None, body: bytes) -> None:
    """Raise 401 unless one of the header's v1 signatures matches one of the secrets."""
    offered = [s.strip() for s in (header or "").split(",") if s.strip().startswith("v1=")]
    ok = False
    for secret in secrets:
        expected = pagerduty_signature(secret, body).encode()
        for sig in offered:
            # Check every pair so timing does not tell which one was close.
            ok |= hmac.compare_digest(expected, sig.encode())
    if not ok:
        INPUT_REJECTED.labels(source="pagerduty", reason="bad_signature").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="X-PagerDuty-Signature does not verify")


@router.post("/pagerduty/webhook", summary="PagerDuty v3 webhooks (signed by PagerDuty)")
async def webhook(request: Request) -> dict[str, Any]:
    settings = state_of(request).settings
    secrets = [ref.read() for ref in settings.pagerduty.webhook_secrets]
    body = await request.body()
    if not secrets:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="PagerDuty webhook secrets are not configured")
    verify_pagerduty_request(secrets, request.headers.get("x-pagerduty-signature"), body)
    check_json(request)  # after the signature, so an unsigned caller learns nothing about the body
    try:
        event = Webhook.model_validate_json(body).event
    except ValidationError:
        INPUT_REJECTED.labels(source="pagerduty", reason="bad_payload").inc()
        mark(request.scope, "bad_payload")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="expected a v3 webhook: {'event': {...}}") from None
    incident_id = incident_id_from_dedup_key(event.data.incident_key if event.data else None)
    if event.event_type not in HANDLED or incident_id is None:
        return {"status": "ignored"}
    agent = event.agent or Agent()
    if agent.type != "user_reference":
        # Our own Events API acknowledge/resolve, or an automatic resolve: nothing for us to do.
        return {"status": "ignored"}
    store = state_of(request).store
    if await _seen(store, event.id):
        return {"status": "duplicate"}
    mapped = approver_by_pagerduty_user(settings.approvers, agent.id)
    actor = mapped.name if mapped else (agent.summary or f"pagerduty:{agent.id}")
    responder = state_of(request).incidents
    outcome = "acknowledged"
    try:
        await responder.acknowledge(incident_id, actor, via="pagerduty")
    except TemporaryError as exc:
        # No receipt: PagerDuty redelivers on a 5xx, and the ack is idempotent.
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"try again: {exc.reason}") from None
    except PermanentError as exc:
        log.warning("pagerduty acknowledgement refused", incident_id=incident_id, reason=exc.reason)
        outcome = f"refused: {exc.reason}"
    await _record(store, event.id, state_of(request).clock.now())
    log.info("pagerduty webhook handled", incident_id=incident_id, event_type=event.event_type, actor=actor)
    return {"status": outcome, "incident_id": incident_id}


async def _seen(store: Store, event_id: str) -> bool:
    async with store.transaction() as session:
        return await session.get(ReceiptRow, ("pagerduty", event_id)) is not None


async def _record(store: Store, event_id: str, now: datetime) -> None:
    try:
        async with store.transaction() as session:
            session.add(ReceiptRow(source="pagerduty", receipt_id=event_id, at=now))
    except ConstraintError:
        pass  # a concurrent redelivery recorded it first; the ack was idempotent
