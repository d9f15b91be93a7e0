"""Bearer tokens with scopes for every endpoint that is not a signed webhook.

Tokens are configured as SHA-256 digests; comparison is constant-time. A
missing or unknown token is 401, a known token without the scope 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from daemon.api.state import state_of
from daemon.config import ApiToken

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's name, used as the actor in the audit log."""

    name: str
    scopes: frozenset[str]


class TokenAuth:
    """Resolves the Authorization header to a Principal."""

    def __init__(self, tokens: list[ApiToken], *, required: bool = True) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), t) for t in tokens]
        self.required = required

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
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or unknown bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"token '{principal.name}' lacks scope '{scope}'")
        return principal

    return dependency
