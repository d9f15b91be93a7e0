"""The production HTTP app over the parts a test has: ``build_app`` with every router and middleware.

Tests of the API go through the app as the daemon builds it (body limits, the
request counter, the exception handlers), never a bare router: a defect that
lives in the middleware must show in the test. Parts a test does not give are
absent (None); a route that needs one fails loudly.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from daemon.api.app import build_app
from daemon.api.auth import TokenAuth
from daemon.api.state import ApiState
from daemon.clock import FakeClock
from daemon.config import Settings, load_settings


def app_for(*, settings: Settings | None = None, **parts: Any) -> FastAPI:
    settings = settings or load_settings(None)
    given: dict[str, Any] = {
        "settings": settings, "clock": FakeClock(), "auth": TokenAuth(list(settings.http.tokens)), "store": None,
        "rules": None, "incidents": None, "inbox": None, "leader": None, "dry_run": True,
        "pauses": None, "pause_watcher": None,
    }  # fmt: skip
    unknown = set(parts) - set(given)
    if unknown:
        raise TypeError(f"ApiState has no {sorted(unknown)}")
    return build_app(ApiState(**(given | parts)), max_body_bytes=settings.http.max_body_bytes)
