"""An in-process uvicorn server running the webhook router, for the ingest integration tests."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn

from daemon.clock import Clock
from daemon.config import ApiToken, Settings
from daemon.ingest import Inbox
from tests.api_app import app_for

TOKEN = "ingest-integration-token"


def settings() -> Settings:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return Settings(http={"tokens": [ApiToken(name="stack", sha256=digest, scopes=["ingest"])]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    address: str
    inbox: Inbox


@asynccontextmanager
async def serve(inbox: Inbox, clock: Clock) -> AsyncIterator[Server]:
    """Serve the receivers on a free loopback port until the block ends ("the daemon is killed")."""
    app = app_for(settings=settings(), clock=clock, inbox=inbox)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("uvicorn did not start")
        yield Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", inbox)
    finally:
        server.should_exit = True
        await task
