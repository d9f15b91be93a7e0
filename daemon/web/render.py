"""HTML out: the Jinja2 environment (autoescape always on) and the headers every page carries.

Everything an alert carries (labels, annotations, the generator URL) is the
sender's text; autoescape renders a ``<script>`` label as text, and the
Content-Security-Policy (``default-src 'self'``, no inline script, no framing)
would refuse to run one even if a template forgot. Pages are never cached:
they show live state and a CSRF token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from daemon import __version__
from daemon.web import views

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
_ENV.filters["clock"] = views.clock_time
_ENV.filters["detail"] = views.detail_text
_ENV.globals["version"] = __version__


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context``; ``user`` (or None) and ``path`` are always there."""
    context.setdefault("user", None)
    context.setdefault("csrf", context["user"].session.csrf if context["user"] is not None else "")
    html = _ENV.get_template(template).render(path=request.url.path, **context)
    return secure(HTMLResponse(html, status_code=status))  # type: ignore[return-value]


def redirect(url: str) -> RedirectResponse:
    """303 See Other: after a form, the browser GETs the page (no re-POST on reload)."""
    return secure(RedirectResponse(url, status_code=303))  # type: ignore[return-value]
