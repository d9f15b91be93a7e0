"""How the HTTP edge refuses a request: one reason per refusal, counted once, and the JSON-only check.

Part of the api stage. A route or middleware that refuses a request records a
short reason in the request's ASGI scope (``mark``) and answers; the request
counter (``api.app.RequestCounter``) reads the reason back when the answer is
a 4xx or a 503 and counts it in ``rollbackd_http_rejected_total{route,reason}``.
A refusal that names no reason (FastAPI's 404 and 405, a handler's own
``HTTPException``) is counted under the reason its status implies, so every
refusal is counted exactly once, in one place.
"""

from __future__ import annotations

import email.message
from collections.abc import MutableMapping
from typing import Any

from fastapi import HTTPException, Request, status

REASON_KEY = "rollbackd.rejected"

_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_body",
    423: "locked",
    429: "rate_limited",
    503: "unavailable",
}


def mark(scope: MutableMapping[str, Any], reason: str) -> None:
    """Record why this request is refused; the first reason recorded is the one counted."""
    scope.setdefault(REASON_KEY, reason)


def reason_of(scope: MutableMapping[str, Any], status_code: int) -> str:
    """The reason recorded for this request, else the one its status implies."""
    return str(scope.get(REASON_KEY) or _BY_STATUS.get(status_code, f"http_{status_code}"))


def is_rejection(status_code: int) -> bool:
    """4xx and 503 refuse a request; a 500 is our failure, not a refusal."""
    return 400 <= status_code < 500 or status_code == 503


def reject(
    request: Request, code: int, reason: str, message: str, *, headers: dict[str, str] | None = None
) -> HTTPException:
    """An HTTPException whose detail carries ``reason`` and ``message``, with the reason recorded for the count."""
    mark(request.scope, reason)
    return HTTPException(code, detail={"reason": reason, "message": message}, headers=headers)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def is_json(content_type: str | None) -> bool:
    """``application/json`` or any ``application/*+json``, with or without parameters (charset)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def check_json(request: Request) -> None:
    """415 unless a request that carries a body says it is JSON; a request without a body passes."""
    if _has_body(request) and not is_json(request.headers.get("content-type")):
        given = request.headers.get("content-type") or "none"
        raise reject(
            request,
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {given[:100]!r}",
        )


async def require_json(request: Request) -> None:
    """FastAPI dependency form of ``check_json``: list it after the auth dependency, so 401 comes first."""
    check_json(request)
