"""The gate in front of every page and form: signed in (or proxied), and the form's CSRF token.

``pages`` and ``actions`` call ``user_or_signin`` / ``form_user``; a page
without a user redirects to the sign-in form (keeping where it was going), a
form without a user or with a wrong CSRF token is refused with 403 and changes
nothing.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from daemon.logs import get_logger
from daemon.metrics import INPUT_REJECTED
from daemon.web import render
from daemon.web.identity import User, current_user, set_session_cookie
from daemon.web.sessions import csrf_ok

log = get_logger(__name__)


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a path on this site only, never an open redirect.

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so
    ``/<TAB>/evil.example`` would become ``//evil.example``: any control
    character, space or backslash refuses the value, as does a scheme or host.
    """
    if not value or not value.startswith("/") or any(ord(c) <= 0x20 or c in "\\\x7f" for c in value):
        return "/incidents"
    parts = urlsplit(value)
    if value.startswith("//") or parts.scheme or parts.netloc:
        return "/incidents"
    return value


def signin_url(request: Request) -> str:
    return "/signin?next=" + quote(_here(request), safe="")


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def bounce(request: Request) -> Response | None:
    """A link followed from Slack or PagerDuty arrives cross-site, so the SameSite=Strict cookie is not sent.

    Reloading the same URL from this site's own page makes the next request
    same-site and the cookie goes with it. No script: a meta refresh, which the
    CSP allows. Only for a cross-site top-level GET, so it cannot loop.
    """
    if request.headers.get("sec-fetch-site") != "cross-site" or request.method != "GET":
        return None
    return render.page(request, "bounce.html", url=_here(request))


async def user_or_signin(request: Request) -> User | Response:
    """The user of a page view, or the response that gets them signed in."""
    user = await current_user(request)
    if user is not None:
        return user
    return bounce(request) or render.redirect(signin_url(request))


def finish(request: Request, response: Response, user: User) -> Response:
    """Set the session cookie when the session was made on this request (proxy mode)."""
    if user.fresh:
        set_session_cookie(request, response, user.session)
    return response


def refuse(request: Request, why: str, reason: str, user: User | None = None) -> Response:
    INPUT_REJECTED.labels(source="web", reason=reason).inc()
    log.warning("web form refused", reason=reason, path=request.url.path)
    return render.page(request, "error.html", status=403, user=user, title="Refused", message=why)


async def form_user(request: Request) -> tuple[User, FormData] | Response:
    """The user posting a form whose CSRF token matches their session; else a 403 page."""
    user = await current_user(request)
    form = await request.form()
    if user is None:
        return refuse(request, "You are not signed in (or your session ended). Sign in and try again.", "signed_out")
    submitted = form.get("csrf")
    if user.fresh or not csrf_ok(user.session.secret, submitted if isinstance(submitted, str) else None):
        return refuse(request, "The form was missing its security token or it did not match. Reload the page.",
                      "csrf", user)  # fmt: skip
    return user, form


def field(form: FormData, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""
