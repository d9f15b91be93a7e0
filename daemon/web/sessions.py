"""Server-side sessions for the incident pages, in the store so every replica shares them.

``identity`` creates one at sign-in (a personal token of scope ``responder``,
or the authenticating proxy's user) and looks it up on each request. The
cookie holds a random secret; the table holds only its SHA-256, so a copy of
the database signs no one in. A session ends when unused for
``web.session_idle_s`` or ``web.session_max_s`` after sign-in, whichever comes
first, and at sign-out; expired rows are swept at each sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_

from daemon.clock import Clock
from daemon.store.db import Store
from daemon.store.tables import WebSessionRow

# Last-seen is written at most this often: a page view is a read, not a write per request.
TOUCH_EVERY = timedelta(seconds=30)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(secret: str) -> str:
    """The form token of the session (or sign-in cookie) ``secret``: derived, so nothing more is stored."""
    return hmac.new(secret.encode(), b"rollbackd-web-csrf", hashlib.sha256).hexdigest()


def csrf_ok(secret: str | None, submitted: str | None) -> bool:
    if not secret or not submitted:
        return False
    return hmac.compare_digest(csrf_token(secret), submitted)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user; ``secret`` is the cookie's value (never stored, never rendered)."""

    secret: str
    user: str
    via: str  # token | proxy
    created_at: datetime
    expires_at: datetime

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)


class SessionStore:
    """Creates, finds (sliding the idle expiry) and ends sessions."""

    def __init__(self, store: Store, clock: Clock, *, idle_s: float, max_s: float) -> None:
        self._store = store
        self._clock = clock
        self._idle = timedelta(seconds=idle_s)
        self._max = timedelta(seconds=max_s)

    async def create(self, user: str, via: str) -> Session:
        now = self._clock.now()
        secret = new_secret()
        row = WebSessionRow(
            id=digest(secret), user_name=user, via=via, created_at=now, last_seen_at=now, expires_at=now + self._max
        )
        async with self._store.transaction("web session sign-in") as s:
            await s.execute(
                delete(WebSessionRow).where(
                    or_(WebSessionRow.expires_at <= now, WebSessionRow.last_seen_at <= now - self._idle)
                )
            )
            s.add(row)
        return Session(secret, user, via, now, row.expires_at)

    async def find(self, secret: str | None) -> Session | None:
        """The live session of ``secret``; None when unknown, idle too long or past its absolute end."""
        if not secret:
            return None
        now = self._clock.now()
        async with self._store.transaction("web session lookup") as s:
            row = await s.get(WebSessionRow, digest(secret))
            if row is None:
                return None
            if row.expires_at <= now or row.last_seen_at + self._idle <= now:
                await s.delete(row)
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = now
            return Session(secret, row.user_name, row.via, row.created_at, row.expires_at)

    async def end(self, secret: str | None) -> bool:
        """Sign out: the session is gone on every replica. False if there was none."""
        if not secret:
            return False
        async with self._store.transaction("web session sign-out") as s:
            result = await s.execute(delete(WebSessionRow).where(WebSessionRow.id == digest(secret)))
        return bool(getattr(result, "rowcount", 0))
