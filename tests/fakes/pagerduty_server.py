"""A loopback PagerDuty Events API v2 over HTTPS, for the real ``pagerduty`` client.

``POST /v2/enqueue`` validates events as PagerDuty documents them (routing key
of 32 characters, ``event_action`` trigger/acknowledge/resolve, ``dedup_key``
at most 255 characters and required unless triggering, ``payload.summary``,
``source`` and a valid ``severity`` for a trigger) and answers 202
``{"status": "success", "dedup_key": ...}`` or 400 with ``errors``. Over 120
events a minute per routing key it answers 429; failures can also be
scripted. It keeps one alert per dedup key with its status, records every
event, and signs v3 webhooks the way PagerDuty does. ``POST /v2/change/enqueue``
takes Change Events (routing key, ``payload.summary`` of at most 1,024
characters, optional ``source``, ``timestamp``, ``custom_details`` and
``links``) and answers 202 ``{"status": "success", "message": "Change event
processed"}``, or 400 with ``errors``; it shares the rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.tls import TlsFiles

SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}


@dataclass
class Alert:
    dedup_key: str
    routing_key: str
    status: str
    payload: dict[str, Any]
    history: list[str] = field(default_factory=list)


@dataclass
class _Failure:
    status: int
    retry_after: int | None = None
    stall_s: float = 0.0


class FakePagerDuty:
    """Start with ``await FakePagerDuty(tls).start()``; point the client at ``base_url`` with ``ca_file``."""

    def __init__(self, tls: TlsFiles, *, limit_per_minute: int = 120, now: Callable[[], float] = time.monotonic):
        self.tls = tls
        self.limit = limit_per_minute
        self._now = now
        self.events: list[dict[str, Any]] = []  # accepted events, in arrival order
        self.changes: list[dict[str, Any]] = []  # accepted change events, in arrival order
        self.requests: list[tuple[int, dict[str, Any] | str]] = []  # every request with the status answered
        self.alerts: dict[str, Alert] = {}
        self._windows: dict[str, deque[float]] = {}
        self._script: list[_Failure] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def fail_next(self, n: int, *, status: int, retry_after: int | None = None) -> None:
        self._script.extend(_Failure(status, retry_after) for _ in range(n))

    def stall_next(self, n: int, seconds: float) -> None:
        """The next ``n`` requests hang ``seconds`` and are then dropped unapplied (client timeouts)."""
        self._script.extend(_Failure(0, stall_s=seconds) for _ in range(n))

    async def start(self) -> FakePagerDuty:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        app.router.add_post("/v2/change/enqueue", self._change)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls.server_context())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"https://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _enqueue(self, request: web.Request) -> web.Response:
        raw = await request.text()
        failure = self._script.pop(0) if self._script else None
        if failure and failure.stall_s:
            # A request lost in a hung gateway: the client times out, nothing is applied.
            await asyncio.sleep(failure.stall_s)
            return self._answer(504, raw, {"status": "error", "message": "gateway timeout"})
        try:
            event = json.loads(raw)
        except json.JSONDecodeError:
            return self._answer(400, raw, {"status": "invalid event", "message": "Event object is invalid"})
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            return self._answer(failure.status, event, {"status": "error", "message": "scripted"}, headers)
        errors = validate(event)
        if errors:
            return self._answer(400, event, {"status": "invalid event", "message": "Event object is invalid",
                                             "errors": errors})  # fmt: skip
        if not self._admit(event["routing_key"]):
            return self._answer(429, event, {"status": "throttled", "message": "Requests for this service are "
                                             "arriving too quickly. Please retry later."})  # fmt: skip
        key = event.get("dedup_key") or uuid.uuid4().hex
        self._apply(event, key)
        self.events.append(event)
        return self._answer(202, event, {"status": "success", "message": "Event processed", "dedup_key": key})

    async def _change(self, request: web.Request) -> web.Response:
        try:
            event = json.loads(await request.text())
        except json.JSONDecodeError:
            return self._answer(400, "", {"status": "invalid event", "message": "Event object is invalid"})
        errors = validate_change(event)
        if errors:
            return self._answer(400, event, {"status": "invalid event", "message": "Event object is invalid",
                                             "errors": errors})  # fmt: skip
        if not self._admit(event["routing_key"]):
            return self._answer(429, event, {"status": "throttled", "message": "Too many requests"})
        self.changes.append(event)
        return self._answer(202, event, {"status": "success", "message": "Change event processed"})

    def _answer(
        self, status: int, event: dict[str, Any] | str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        self.requests.append((status, event))
        return web.json_response(body, status=status, headers=headers)

    def _admit(self, routing_key: str) -> bool:
        now = self._now()
        window = self._windows.setdefault(routing_key, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.limit:
            return False
        window.append(now)
        return True

    def _apply(self, event: dict[str, Any], key: str) -> None:
        action = event["event_action"]
        alert = self.alerts.get(key)
        if action == "trigger":
            if alert is None or alert.status == "resolved":
                alert = self.alerts[key] = Alert(key, event["routing_key"], "triggered", event["payload"])
            alert.history.append("trigger")
        elif alert is not None and alert.status != "resolved":
            # Acknowledge/resolve change an open alert; for anything else PagerDuty drops them silently.
            alert.status = "acknowledged" if action == "acknowledge" else "resolved"
            alert.history.append(action)


def _envelope_errors(event: Any) -> list[str]:
    """What both Events APIs check first: a JSON object with a 32-character routing key."""
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    rk = event.get("routing_key")
    return [] if isinstance(rk, str) and len(rk) == 32 else ["'routing_key' must be a 32-character string"]


def validate(event: Any) -> list[str]:
    """The documented Events v2 checks; an empty list means valid."""
    errors = _envelope_errors(event)
    if not isinstance(event, dict):
        return errors
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    key = event.get("dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not key:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is required for trigger")
        else:
            for name in ("summary", "source"):
                if not isinstance(payload.get(name), str) or not payload.get(name):
                    errors.append(f"'payload.{name}' is required")
            if payload.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' must be one of critical, error, warning, info")
            if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
                errors.append("'payload.summary' must be at most 1024 characters")
    return errors


def validate_change(event: Any) -> list[str]:
    """The documented Change Events checks; an empty list means valid."""
    errors = _envelope_errors(event)
    if not isinstance(event, dict):
        return errors
    payload = event.get("payload")
    summary = payload.get("summary") if isinstance(payload, dict) else None
    if not isinstance(summary, str) or not summary:
        errors.append("'payload.summary' is required")
    elif len(summary) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    links = event.get("links", [])
    if not isinstance(links, list) or any(not isinstance(x, dict) or "href" not in x for x in links):
        errors.append("'links' must be a list of objects with 'href'")
    return errors


def sign_webhook(secrets: list[str], body: bytes) -> str:
    """``X-PagerDuty-Signature``: one ``v1=`` HMAC-SHA256 per active secret."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def webhook_body(event_type: str, *, dedup_key: str, agent_id: str = "PUSER01", agent_name: str = "Ada Oncall",
                 agent_type: str = "user_reference", event_id: str | None = None) -> bytes:  # fmt: skip
    """A v3 webhook as PagerDuty sends it for an incident created from our events."""
    status = event_type.rpartition(".")[2]
    return json.dumps({
        "event": {
            "id": event_id or uuid.uuid4().hex[:26],
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": "2026-01-01T00:00:00.000Z",
            "agent": {"html_url": "https://example.pagerduty.com/users/" + agent_id, "id": agent_id,
                      "self": "https://api.pagerduty.com/users/" + agent_id, "summary": agent_name,
                      "type": agent_type},
            "client": None,
            "data": {"id": "Q1ABCDEF", "type": "incident", "number": 42, "status": status,
                     "incident_key": dedup_key, "title": "rollbackd incident", "urgency": "high",
                     "service": {"id": "PSVC001", "type": "service_reference", "summary": "checkout"}},
        }
    }).encode()  # fmt: skip
