"""Mounts the incident pages on the daemon's app (``api.app.build_app`` calls ``mount``)."""

from __future__ import annotations

from fastapi import FastAPI

from daemon.web import actions, pages


def mount(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(actions.router)
