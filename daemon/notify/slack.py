"""Slack notifier: one message per incident, updated in place, each step in its thread.

The first delivery for an incident posts the message (``chat.postMessage``)
in the channel its routing names (``slack:#channel``, else the default) and
stores the returned channel id and ``ts`` in ``notification_refs``; every later
step updates it (``chat.update``) and posts a reply in its thread. A thread
reply's ``ts`` is stored under its outbox row id, so a retried row updates
its reply rather than posting it twice.

slack_sdk's own retry handlers are off: the outbox owns retries. Errors map to
``TemporaryError`` (429 with Retry-After, 5xx, timeouts, connection errors) or
``PermanentError`` with Slack's ``error`` as the reason (channel_not_found,
invalid_auth, ...).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from daemon.config import SlackSettings
from daemon.errors import ConfigError, PermanentError, RollbackdError, TemporaryError
from daemon.logs import get_logger
from daemon.notify import slack_render
from daemon.notify.notice import Notice
from daemon.notify.refs import MemoryRefs, Refs
from daemon.notify.text import incident_url

log = get_logger(__name__)

# Slack ``error`` values that a later try can cure.
_TEMPORARY_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_MESSAGE_GONE = {"message_not_found", "cant_update_message", "edit_window_closed"}
_THREAD_REFS_KEPT = 200


def make_web_client(settings: SlackSettings) -> AsyncWebClient:
    """An AsyncWebClient on the configured base URL, with retries left to the caller."""
    if settings.token is None:
        raise ConfigError("slack.token is required when Slack is enabled")
    return AsyncWebClient(
        token=settings.token.read(),
        base_url=settings.base_url,
        timeout=max(1, round(settings.timeout_s)),
        retry_handlers=[],
    )


def map_slack_error(method: str, exc: Exception) -> RollbackdError:
    """Our error for a failed Web API call; the message names the method and Slack's error, never the token."""
    if isinstance(exc, SlackApiError):
        resp = exc.response
        status = int(getattr(resp, "status_code", 0) or getattr(resp, "status", 0) or 0)
        data = getattr(resp, "data", None)
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        if status == 429 or error == "ratelimited":
            headers = getattr(resp, "headers", None) or {}
            try:
                delay: float | None = float(headers.get("Retry-After", ""))
            except (TypeError, ValueError):
                delay = None
            return TemporaryError(f"slack {method}: rate limited", reason="rate_limited", delay=delay)
        if status >= 500 or error in _TEMPORARY_ERRORS:
            return TemporaryError(f"slack {method}: HTTP {status} {error}".rstrip(), reason=error or f"http_{status}")
        return PermanentError(f"slack {method}: {error or f'HTTP {status}'}", reason=error or f"http_{status}")
    if isinstance(exc, TimeoutError):
        return TemporaryError(f"slack {method}: timed out", reason="timeout")
    return TemporaryError(f"slack {method}: {type(exc).__name__}", reason="network")


class SlackNotifier:
    """Delivers outbox rows of channel ``slack``."""

    channel = "slack"

    def __init__(
        self, client: AsyncWebClient, *, default_channel: str = "#incidents", public_url: str | None = None
    ) -> None:
        self._client = client
        self._default_channel = default_channel
        self._public_url = public_url.rstrip("/") if public_url else None
        self._refs: Refs = MemoryRefs()

    @classmethod
    def from_settings(cls, settings: SlackSettings, *, public_url: str | None = None) -> SlackNotifier:
        return cls(make_web_client(settings), default_channel=settings.default_channel, public_url=public_url)

    def bind_refs(self, refs: Refs) -> None:
        self._refs = refs

    def channel_for(self, n: Notice) -> str:
        for c in n.channels:
            if c.startswith("slack:") and len(c) > len("slack:"):
                return c.partition(":")[2]
        return self._default_channel

    async def deliver(self, payload: dict[str, Any]) -> None:
        view = Notice.from_payload(payload)
        url = incident_url(self._public_url, view.incident_id)
        text, blocks = slack_render.main_message(view, url)
        ref = await self._refs.get(view.incident_id, self.channel) or {}
        if ref.get("ts"):
            try:
                await self._call("chat_update", channel=ref["channel"], ts=ref["ts"], text=text, blocks=blocks)
            except PermanentError as exc:
                if exc.reason not in _MESSAGE_GONE:
                    raise
                log.warning("slack message is gone; posting a new one", reason=exc.reason)
                ref = {}
        if not ref.get("ts"):
            resp = await self._call("chat_postMessage", channel=self.channel_for(view), text=text, blocks=blocks)
            ref = {"channel": resp["channel"], "ts": resp["ts"], "thread": {}}
            # Stored before the thread reply, so a retry after a failed reply updates, not re-posts.
            await self._refs.put(view.incident_id, self.channel, ref)
        await self._reply(view, ref, url)

    async def _reply(self, view: Notice, ref: dict[str, Any], url: str | None) -> None:
        reply = slack_render.thread_reply(view, url)
        thread: dict[str, str] = dict(ref.get("thread") or {})
        key = str(view.outbox_id) if view.outbox_id is not None else None
        if key is not None and key in thread:
            await self._call("chat_update", channel=ref["channel"], ts=thread[key], text=reply)
            return
        resp = await self._call("chat_postMessage", channel=ref["channel"], thread_ts=ref["ts"], text=reply)
        if key is not None:
            thread[key] = str(resp["ts"])
            if len(thread) > _THREAD_REFS_KEPT:
                thread = dict(sorted(thread.items(), key=lambda kv: int(kv[0]))[-_THREAD_REFS_KEPT:])
            await self._refs.put(view.incident_id, self.channel, {**ref, "thread": thread})

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, method)(**kwargs)
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            raise map_slack_error(method.replace("_", "."), exc) from None
