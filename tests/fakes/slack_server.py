"""A loopback Slack Web API with Slack's documented behaviour, for the real slack_sdk client.

Implements chat.postMessage, chat.update, chat.postEphemeral and views.open:
``ok``/``ts``/``channel`` answers; ``ok: false`` errors with HTTP 200
(``not_authed`` without a bearer token, ``invalid_auth`` with a wrong one,
``channel_not_found``, ``message_not_found``); 429 with ``Retry-After``; and
scripted failure windows ("the next N calls answer 429 / 500 / an error /
stall"). Every call is recorded with its arguments (never the token).
Also signs interactivity payloads the way Slack does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int
    answer: dict[str, Any] | str


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None
    edits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    stall_s: float = 0.0


class FakeSlack:
    """Start with ``await FakeSlack(token).start()``; point AsyncWebClient at ``base_url``."""

    def __init__(self, token: str, channels: dict[str, str] | None = None) -> None:
        self.token = token
        self.channels = channels or {"#incidents": "C0INCIDENTS", "#security": "C0SECURITY"}
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self._script: list[_Failure] = []
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- scripting ------------------------------------------------------------------------
    def fail_next(self, n: int, *, status: int = 200, error: str | None = None, retry_after: int | None = None) -> None:
        """The next ``n`` calls answer ``status`` (429 with Retry-After, 500) or ``ok: false`` ``error``."""
        self._script.extend(_Failure(status, error, retry_after) for _ in range(n))

    def stall_next(self, n: int, seconds: float) -> None:
        """The next ``n`` calls hang ``seconds`` and are then dropped unapplied (client timeouts)."""
        self._script.extend(_Failure(stall_s=seconds) for _ in range(n))

    # --- views of what happened --------------------------------------------------------------
    def ok_calls(self, method: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.status == 200 and isinstance(c.answer, dict) and c.answer.get("ok")
            if method is None or c.method == method
        ]

    def top_level(self) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts is None]

    def thread(self, ts: str) -> list[Message]:
        return sorted((m for m in self.messages.values() if m.thread_ts == ts), key=lambda m: float(m.ts))

    # --- server ---------------------------------------------------------------------------------
    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/api/"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _read_args(request)
        failure = self._script.pop(0) if self._script else None
        if failure and failure.stall_s:
            # A request lost in a hung gateway: the client times out, nothing is applied.
            await asyncio.sleep(failure.stall_s)
            self.calls.append(Call(method, args, 504, "Gateway Timeout"))
            return web.Response(status=504, text="Gateway Timeout")
        status, answer, headers = self._answer(method, args, request.headers.get("Authorization"), failure)
        self.calls.append(Call(method, args, status, answer))
        if isinstance(answer, str):
            return web.Response(status=status, text=answer, headers=headers)
        return web.json_response(answer, status=status, headers=headers)

    def _answer(  # noqa: PLR0911 - one return per documented answer
        self, method: str, args: dict[str, Any], auth: str | None, failure: _Failure | None
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        if failure is not None:
            if failure.status == 429:
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(failure.retry_after or 1)}
            if failure.status >= 500:
                return failure.status, "Internal Server Error", {}
            return 200, {"ok": False, "error": failure.error or "fatal_error"}, {}
        if not auth or not auth.startswith("Bearer "):
            return 200, {"ok": False, "error": "not_authed"}, {}
        if not hmac.compare_digest(auth[7:].encode(), self.token.encode()):
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        handler = self._methods().get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        return 200, handler(args), {}

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
        }

    def _channel_id(self, name: str) -> str | None:
        if name in self.channels:
            return self.channels[name]
        return name if name in self.channels.values() else None

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        thread_ts = args.get("thread_ts")
        if thread_ts is not None and (channel, thread_ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        ts = f"1700000000.{next(self._ts):06d}"
        self.messages[(channel, ts)] = Message(channel, ts, args.get("text", ""), args.get("blocks") or [], thread_ts)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text", ""), "ts": ts}}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        msg = self.messages.get((channel, str(args.get("ts"))))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        msg.edits.append({"text": msg.text, "blocks": msg.blocks})
        msg.text = args.get("text", msg.text)
        if "blocks" in args:
            msg.blocks = args["blocks"] or []
        return {"ok": True, "channel": channel, "ts": msg.ts, "text": msg.text}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._channel_id(str(args.get("channel", ""))) is None:
            return {"ok": False, "error": "channel_not_found"}
        self.ephemeral.append(args)
        return {"ok": True, "message_ts": f"1700000001.{next(self._ts):06d}"}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        self.views.append({"trigger_id": args["trigger_id"], "view": view})
        return {"ok": True, "view": {"id": f"V{len(self.views):04d}", **(view or {})}}


async def _read_args(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    form = await request.post()
    out: dict[str, Any] = {}
    for k, v in form.items():
        text = str(v)
        out[k] = json.loads(text) if k in ("blocks", "view") and text.startswith(("[", "{")) else text
    return out


def sign_interaction(secret: str, payload: dict[str, Any], timestamp: int) -> tuple[bytes, dict[str, str]]:
    """The body and headers Slack sends to an interactivity URL."""
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    base = b"v0:" + str(timestamp).encode() + b":" + body
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    headers = {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return body, headers
