"""Mounts the incident pages on the daemon's app (``api.app.build_app`` calls ``mount``).

Always mounted, so building the app needs nothing of the state (the OpenAPI
export builds it from nothing); with ``web.enabled: false`` every page answers
404 before any handler runs.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Request

from daemon.api.state import state_of
from daemon.web import actions, pages


async def _enabled(request: Request) -> None:
    if not state_of(request).settings.web.enabled:
        raise HTTPException(status_code=404, detail="the incident pages are turned off (web.enabled: false)")


def mount(app: FastAPI) -> None:
    for router in (pages.router, actions.router):
        app.include_router(router, dependencies=[Depends(_enabled)])
