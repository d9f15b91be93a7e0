"""Who is using the incident pages: a signed-in session, or the user an authenticating proxy names.

Two modes, both ending in a ``sessions.Session`` (its derived CSRF token
guards every form):

* **token**: ``POST /signin`` with a personal token holding the scope
  ``responder`` (checked by the API's ``TokenAuth``) creates a session whose
  secret travels in an HttpOnly, SameSite=Strict cookie (Secure over TLS).
* **proxy**: when ``web.proxy_user_header`` is set and the peer's address is
  in ``web.trusted_proxies``, that header names the user and a session for
  them is made on their first request. From any other peer the header is
  ignored (and counted): anyone could send it. The peer is the TCP peer
  (uvicorn is told to read no X-Forwarded-For), so a client cannot name a
  trusted address for itself; ``X-Forwarded-Proto: https`` from a trusted
  proxy makes the cookies Secure.

A user maps to an approver through ``web.users`` (default: the same name);
approving still needs that approver's code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from daemon.api.state import ApiState, state_of
from daemon.config import WebSettings
from daemon.logs import get_logger
from daemon.metrics import INPUT_REJECTED
from daemon.web.sessions import Session, SessionStore

log = get_logger(__name__)

SESSION_COOKIE = "rollbackd_session"
SIGNIN_COOKIE = "rollbackd_signin"  # the sign-in form's double-submit secret, before any session
SIGNIN_SCOPES = frozenset({"responder", "admin"})


@dataclass(frozen=True, slots=True)
class User:
    """The person behind a request; ``approver`` is None when they are not a configured approver."""

    name: str
    via: str
    approver: str | None
    session: Session
    fresh: bool = False  # made on this request (proxy mode): the response must set the cookie


def session_store(state: ApiState) -> SessionStore:
    web = state.settings.web
    return SessionStore(state.store, state.clock, idle_s=web.session_idle_s, max_s=web.session_max_s)


def approver_of(state: ApiState, user: str) -> str | None:
    name = state.settings.web.users.get(user, user)
    return name if name in state.incidents.approvers.by_name else None


def _peer(request: Request) -> str:
    """The address the connection comes from: uvicorn reads no X-Forwarded-For (``app``), so it is the TCP peer."""
    return request.client.host if request.client else ""


def from_trusted_proxy(request: Request, web: WebSettings) -> bool:
    try:
        address = ipaddress.ip_address(_peer(request))
    except ValueError:
        return False
    return any(address in net for net in web.trusted_proxies)


def over_tls(request: Request) -> bool:
    """Served over TLS: https at the daemon, or a trusted proxy says it terminated TLS (X-Forwarded-Proto)."""
    if request.url.scheme == "https":
        return True
    web = state_of(request).settings.web
    forwarded = request.headers.get("x-forwarded-proto", "").strip().lower()
    return forwarded == "https" and from_trusted_proxy(request, web)


def proxy_user(request: Request, web: WebSettings) -> str | None:
    """The proxy header's user, only from a trusted proxy address."""
    if not web.proxy_user_header:
        return None
    value = request.headers.get(web.proxy_user_header, "").strip()
    if not value:
        return None
    if not from_trusted_proxy(request, web):
        INPUT_REJECTED.labels(source="web", reason="untrusted_proxy_header").inc()
        log.warning("proxy user header ignored: peer is not a trusted proxy", peer=_peer(request))
        return None
    return value[:255]


async def current_user(request: Request) -> User | None:
    """The request's user, or None: signed out (or expired), and no trusted proxy vouches for anyone."""
    state = state_of(request)
    sessions = session_store(state)
    session = await sessions.find(request.cookies.get(SESSION_COOKIE))
    proxied = proxy_user(request, state.settings.web)
    fresh = False
    if proxied is not None and (session is None or session.via != "proxy" or session.user != proxied):
        session = await sessions.create(proxied, "proxy")
        fresh = True
    if session is None:
        return None
    return User(session.user, session.via, approver_of(state, session.user), session, fresh)


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, session.secret, max_age=int(state_of(request).settings.web.session_max_s),
        path="/", httponly=True, secure=over_tls(request), samesite="strict",
    )  # fmt: skip


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, secure=over_tls(request), samesite="strict")
