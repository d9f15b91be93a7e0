"""Bearer tokens with scopes for every endpoint that is not a signed webhook.

Tokens are configured as SHA-256 digests; comparison is constant-time. A
missing or unknown token is 401, a known token without the scope 403, a token
over its rate (``api.throttle``) 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from daemon.api.rejections import mark
from daemon.api.state import state_of
from daemon.api.throttle import Throttle, retry_after
from daemon.config import ApiToken, HttpSettings, RateLimit
from daemon.errors import ConfigError
from daemon.logs import get_logger

log = get_logger(__name__)

ANONYMOUS = "anonymous"


def is_loopback(host: str) -> bool:
    """True only for a loopback address or ``localhost``: any other name may resolve beyond this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def tokens_required(http: HttpSettings) -> bool:
    """Whether the API demands bearer tokens; ConfigError when it would serve beyond loopback without them.

    Called at every start, before anything else starts: off (``http.auth_required: false``,
    or no tokens configured) is allowed on a loopback address only, and said loudly each time.
    """
    loopback = is_loopback(http.host)
    if not http.auth_required:
        if not loopback:
            raise ConfigError(
                f"http.auth_required is false but http.host {http.host!r} is not a loopback address: refusing to "
                "serve the API without authentication (set http.auth_required: true, or bind http.host to 127.0.0.1)"
            )
        log.warning("http.auth_required is false: the API on loopback accepts unauthenticated calls")
        return False
    if not http.tokens:
        if not loopback:
            raise ConfigError("http.tokens is empty: refusing to serve the API beyond loopback without tokens")
        log.warning("no API tokens configured: the API on loopback accepts unauthenticated calls")
        return False
    return True


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's name, used as the actor in the audit log."""

    name: str
    scopes: frozenset[str]


class TokenAuth:
    """Resolves the Authorization header to a Principal."""

    def __init__(self, tokens: list[ApiToken], *, required: bool = True, rate_limit: RateLimit | None = None) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), t) for t in tokens]
        self.required = required
        self.throttle = Throttle(tokens, rate_limit)

    def principal(self, header: str | None) -> Principal | None:
        if not self.required:
            return Principal(ANONYMOUS, frozenset({"read", "ack", "approve", "admin", "ingest"}))
        if not header or not header.lower().startswith("bearer "):
            return None
        digest = hashlib.sha256(header[7:].strip().encode()).digest()
        found: ApiToken | None = None
        for expected, token in self._tokens:
            # Compare against every token so timing does not reveal which one was close.
            if hmac.compare_digest(digest, expected):
                found = token
        return Principal(found.name, frozenset(found.scopes)) if found else None


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller must hold ``scope`` (``admin`` holds every scope)."""

    async def dependency(request: Request) -> Principal:
        auth = state_of(request).auth
        principal = auth.principal(request.headers.get("authorization"))
        # Plain-string details, as the CLI and scripts read them; the reason goes to the count.
        if principal is None:
            mark(request.scope, "unauthenticated")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or unknown bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in principal.scopes and "admin" not in principal.scopes:
            mark(request.scope, "missing_scope")
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"token '{principal.name}' lacks scope '{scope}'")
        wait = auth.throttle.admit(principal.name)
        if wait > 0:
            mark(request.scope, "rate_limited")
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"token '{principal.name}' is over its rate limit; retry in {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait)},
            )
        return principal

    return dependency
