"""PagerDuty notifier: one Events API v2 alert per incident, triggered, acknowledged, resolved.

An applied rollback also goes out as a Change Event (``/v2/change/enqueue``)
to the same services, so PagerDuty shows "rolled back checkout 5 → 4" on the
service's timeline beside the incidents it explains. Change events have no
dedup key: a retried delivery of the same outbox row may show one twice,
which is the safe side of at-least-once.

Every event of an incident uses the dedup key ``rollbackd-<incident_id>``, so
PagerDuty keeps one alert per incident and a retried delivery changes nothing.
The routing key comes from the incident's channels (``pagerduty:<service>``
names a configured service; a bare ``pagerduty`` uses the key named after the
severity, then ``default``, then the only key). Incidents routed to no
PagerDuty service are not paged.

The ``pagerduty`` client is synchronous and retries on its own with blocking
sleeps; its retries are switched off (the outbox owns retries) and each call
runs in a thread with a timeout. A sliding-window limiter keeps each routing
key under PagerDuty's ~120 events a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pagerduty

from daemon.clock import Clock, SystemClock
from daemon.config import PagerDutySettings
from daemon.errors import ConfigError, PermanentError, TemporaryError
from daemon.logs import get_logger
from daemon.model import NotificationKind, Severity, TargetResult
from daemon.notify.notice import Notice
from daemon.notify.ratelimit import SlidingWindowLimiter
from daemon.notify.text import clip_plain, incident_url
from daemon.redact import redact

log = get_logger(__name__)

SEVERITY = {Severity.P0: "critical", Severity.P1: "error", Severity.P2: "warning", Severity.P3: "info"}

_TRIGGER = {
    NotificationKind.OPENED,
    NotificationKind.ESCALATED,
    NotificationKind.FAILED,
    NotificationKind.OBJECTIVE_BREACHED,
    NotificationKind.EXPIRED,
}
_ACK = {NotificationKind.ACKNOWLEDGED}
_RESOLVE = {NotificationKind.RESOLVED, NotificationKind.REJECTED}
_CHANGE = NotificationKind.VERIFYING  # the rollback was applied: the service changed

PREFIX = "rollbackd-"
SUMMARY_MAX = 1024  # the Events API v2 refuses a longer payload.summary


def dedup_key(incident_id: str) -> str:
    return f"{PREFIX}{incident_id}"


def incident_id_from_dedup_key(key: str | None) -> str | None:
    """Our incident id behind a PagerDuty dedup key / incident_key, or None if the alert is not ours."""
    if not key or not key.startswith(PREFIX) or len(key) == len(PREFIX):
        return None
    return key[len(PREFIX) :]


def event_action(n: Notice) -> str | None:
    """trigger / acknowledge / resolve for this step, or None when PagerDuty need not hear of it."""
    if n.kind in _RESOLVE or (not n.record.open and n.kind not in _TRIGGER | _ACK):
        return "resolve"
    if n.kind in _ACK:
        return "acknowledge"
    if n.kind in _TRIGGER:
        return "trigger"
    return None


def custom_details(n: Notice) -> dict[str, Any]:
    """The decision record as PagerDuty ``custom_details``: what, why, revisions, verdicts, outcome; never codes."""
    r, d = n.record, n.record.decision
    dep = d.deploy
    out: dict[str, Any] = {
        "incident_id": r.id,
        "state": r.state.value,
        "rule": r.rule,
        "severity": r.severity.value,
        "action": d.action.value,
        "reason": d.reason,
        "targets": list(r.targets),
        "measured": dict(d.measured),
        "revisions": {
            "deployed": dep.revision if dep else None,
            "rollback_to": d.to_revision,
            "version": dep.version if dep else None,
            "image": dep.image if dep else None,
            "author": dep.author if dep else None,
        },
        "approvals": [
            {"approver": a.approver, "role": a.role, "verdict": a.verdict, "via": a.via} for a in r.approvals
        ],
        "waiting_for_roles": dict(r.missing_roles) if r.awaiting_approval else {},
        "acknowledged_by": r.acknowledged_by,
    }
    if r.actions:
        out["actions"] = [a.to_json() for a in r.actions]
    if r.verification is not None:
        out["verification"] = r.verification.to_json()
    details: dict[str, Any] = redact(out)  # a second net: codes never reach the record in the first place
    return details


class PagerDutyNotifier:
    """Delivers outbox rows of channel ``pagerduty`` through the Events API v2."""

    channel = "pagerduty"

    def __init__(
        self,
        routing_keys: Mapping[str, str],
        *,
        base_url: str = "https://events.pagerduty.com",
        ca_file: Path | None = None,
        timeout_s: float = 10.0,
        public_url: str | None = None,
        clock: Clock | None = None,
        rate_per_minute: int = 120,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ConfigError(f"pagerduty.base_url must be https, got {base_url!r}")
        self._keys = dict(routing_keys)
        self._base_url = base_url.rstrip("/")
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._timeout_s = timeout_s
        self._public_url = public_url.rstrip("/") if public_url else None
        self._limiter = SlidingWindowLimiter(clock or SystemClock(), limit=rate_per_minute)
        self._clients: dict[str, pagerduty.EventsApiV2Client] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: PagerDutySettings, *, public_url: str | None = None, clock: Clock | None = None
    ) -> PagerDutyNotifier:
        """Read the routing keys (secrets) now; raises ConfigError naming a missing one."""
        keys = {service: ref.read() for service, ref in settings.routing_keys.items()}
        return cls(
            keys,
            base_url=settings.base_url,
            ca_file=settings.ca_file,
            timeout_s=settings.timeout_s,
            public_url=public_url,
            clock=clock,
        )

    def services_for(self, n: Notice) -> list[str]:
        """The configured services this incident pages; raises PermanentError for an unknown one."""
        named = [c.partition(":")[2] for c in n.channels if c.startswith("pagerduty:")]
        bare = "pagerduty" in n.channels or not n.channels
        services: list[str] = []
        for name in named:
            if name not in self._keys:
                raise PermanentError(f"no routing key configured for PagerDuty service {name!r}", reason="no_route")
            services.append(name)
        if bare and not named:
            for candidate in (n.severity.value, "default"):
                if candidate in self._keys:
                    return [candidate]
            if len(self._keys) == 1:
                return list(self._keys)
        return services

    async def deliver(self, payload: dict[str, Any]) -> None:
        n = Notice.from_payload(payload)
        action = event_action(n)
        change = self.change_body(n) if n.kind is _CHANGE else None
        if action is None and change is None:
            return
        for service in self.services_for(n):
            if action is not None:
                await self._limiter.acquire(service)
                await self._bounded(action, self._send, service, action, n.incident_id, self.event_body(n, action))
                log.info("pagerduty event accepted", action=action, service=service)
            if change is not None:
                await self._limiter.acquire(service)
                await self._bounded("change", self._send_change, service, change)
                log.info("pagerduty change event accepted", service=service)

    async def _bounded(self, what: str, call: Callable[..., None], *args: Any) -> None:
        """``call`` in a worker thread, bounded beyond the client's own timeout."""
        try:
            await asyncio.wait_for(asyncio.to_thread(call, *args), timeout=self._timeout_s + 5)
        except TimeoutError:
            raise TemporaryError(f"PagerDuty {what} timed out", reason="timeout") from None

    def change_body(self, n: Notice) -> dict[str, Any] | None:
        """The Change Event of an applied rollback: what went back to which revision, by which rule.

        None for a dry run (the daemon's, with no cluster or ``--dry-run``): it reaches verifying
        too, but nothing changed, so PagerDuty must not show a rollback.
        """
        r = n.record
        applied = [a for a in r.actions if a.result != TargetResult.DRY_RUN.value]
        if r.actions and not applied:
            return None
        moves = [
            f"{a.target} revision {a.from_revision} → {a.to_revision}" if a.to_revision is not None else a.target
            for a in applied
        ] or list(r.targets)
        summary = f"rollbackd rolled back {', '.join(moves)} (rule {r.rule or 'manual'}, incident {n.incident_id})"
        payload: dict[str, Any] = {
            "summary": clip_plain(summary, SUMMARY_MAX),
            "source": clip_plain(", ".join(r.targets), 255) or "rollbackd",
            "timestamp": r.updated_at.isoformat(),
            "custom_details": custom_details(n),
        }
        body: dict[str, Any] = {"payload": payload}
        if url := incident_url(self._public_url, n.incident_id):
            body["links"] = [{"href": url, "text": f"rollbackd incident {n.incident_id}"}]
        return body

    def event_body(self, n: Notice, action: str) -> dict[str, Any]:
        """The Events v2 properties besides event_action, dedup_key and routing_key."""
        if action != "trigger":
            return {}
        targets = n.record.decision.targets
        payload: dict[str, Any] = {
            "summary": clip_plain(f"[{n.severity.value}] {n.summary}", SUMMARY_MAX),
            "source": clip_plain(", ".join(n.record.targets), 255) or "rollbackd",
            "severity": SEVERITY[n.severity],
            "custom_details": custom_details(n),
        }
        if n.record.rule:
            payload["class"] = n.record.rule
        if targets:
            payload["component"], payload["group"] = targets[0].name, targets[0].namespace
        body: dict[str, Any] = {"payload": payload, "client": "rollbackd"}
        if url := incident_url(self._public_url, n.incident_id):
            body["client_url"] = url
            body["links"] = [{"href": url, "text": f"rollbackd incident {n.incident_id}"}]
        return body

    def _client(self, service: str) -> pagerduty.EventsApiV2Client:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = pagerduty.EventsApiV2Client(self._keys[service], base_url=self._base_url, verify=self._verify)
                # The outbox owns retries: make the client return every error response at once
                # (a non-zero retry entry with max_http_attempts < 0 returns immediately)
                # and raise on the first network error instead of sleeping in this thread.
                client.retry = {429: 1, 500: 1, 502: 1, 503: 1, 504: 1}
                client.max_http_attempts = -1
                client.max_network_attempts = 0
                client.timeout = self._timeout_s  # type: ignore[assignment]  # httpx takes float seconds
                self._clients[service] = client
            return client

    def _send(self, service: str, action: str, incident_id: str, body: dict[str, Any]) -> None:
        """Runs in a worker thread: one Events v2 event."""
        with _mapped_errors(action):
            self._client(service).send_event(action, dedup_key=dedup_key(incident_id), **body)

    def _send_change(self, service: str, body: dict[str, Any]) -> None:
        """Runs in a worker thread: one Change Event."""
        with _mapped_errors("change"):
            self._client(service).send_change_event(payload=body["payload"], links=body.get("links"))

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


@contextlib.contextmanager
def _mapped_errors(action: str) -> Iterator[None]:
    """The client's errors as ours; messages carry no key."""
    try:
        yield
    except pagerduty.HttpError as exc:
        raise _from_status(exc.response, action) from None
    except pagerduty.Error as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "network error"
        reason = "timeout" if "Timeout" in cause else "network"
        raise TemporaryError(f"PagerDuty {action}: {cause}", reason=reason) from None
    except pagerduty.UrlError as exc:
        raise PermanentError(f"PagerDuty {action}: {exc}", reason="bad_url") from None


def _from_status(response: Any, action: str) -> TemporaryError | PermanentError:
    status = int(getattr(response, "status_code", 0) or 0)
    if status == 429:
        return TemporaryError(
            f"PagerDuty {action}: rate limited (429)", reason="rate_limited", delay=_retry_after(response)
        )
    if status >= 500 or status in (0, 408):
        return TemporaryError(f"PagerDuty {action}: HTTP {status}", reason=f"http_{status}")
    detail = ""
    try:
        data = response.json()
        if isinstance(data, dict):
            detail = "; ".join(str(e) for e in data.get("errors", []))[:300] or str(data.get("message", ""))[:300]
    except ValueError:
        detail = ""
    return PermanentError(f"PagerDuty {action}: HTTP {status} {detail}".rstrip(), reason=f"http_{status}")


def _retry_after(response: Any) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except (TypeError, ValueError):
        return None
