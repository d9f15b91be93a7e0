"""The CLI's HTTP client: one request to the daemon's API, its status and JSON body, or why it failed.

Every command that talks to a running daemon (``incidents``, ``ack``,
``approve``, ``reject``, ``rollback``, ``pause``, ``status``…) goes through
``call``; the daemon itself never imports this module.

It is the standard library's ``urllib.request`` (proxies from the environment,
``SSL_CERT_FILE``, HTTPS with the system's trust store), not httpx: importing
httpx loads its own command line with rich and pygments, and was the larger half
of ``rollbackd incidents list``'s start-up (issue 19). Bodies are parsed with
orjson, which a 1,000-incident page needs.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson


class Unreachable(Exception):  # noqa: N818 - it reads as the condition, "the daemon is unreachable"
    """No HTTP answer: connection refused, name not resolved, TLS failure or timeout."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One endpoint's answer: HTTP status and JSON body (or the start of the text, if it was not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


# urllib follows redirects by default; an API answer is never a redirect, and following one would
# resend the bearer token to wherever it pointed.
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def call(url: str, method: str, path: str, *, token: str | None, body: Any = None, timeout: float = 30.0) -> Answer:
    """``method path`` on the daemon at ``url``; any HTTP status is an ``Answer``, no answer ``Unreachable``."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers, method=method)  # noqa: S310 - the operator's --url
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return _answer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return _answer(exc.code, exc.read())
    except urllib.error.URLError as exc:
        raise Unreachable(_why(exc.reason)) from None
    except (OSError, ValueError) as exc:  # a timeout while reading, a reset, a malformed URL
        raise Unreachable(_why(exc)) from None


def _answer(status: int, raw: bytes) -> Answer:
    try:
        return Answer(status, orjson.loads(raw))
    except orjson.JSONDecodeError:
        return Answer(status, raw[:200].decode(errors="replace"))


def _why(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror)
    return str(reason)
