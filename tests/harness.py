"""Running a whole rollbackd in the test process, with one bearer token per scope.

``daemon_settings`` builds the settings a test needs on top of safe defaults
(port 0, SQLite in the test's temp dir, no cluster unless a kubeconfig is
given); ``TOKENS`` holds a token for every scope, so tests can call the API as
each kind of caller.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from daemon.config import Settings, load_settings

SCOPES = ("read", "ack", "approve", "admin", "ingest", "control")
TOKENS = {scope: f"test-{scope}-{uuid.uuid4().hex}" for scope in SCOPES}


def bearer(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[scope]}"}


def daemon_settings(tmp_path: Path, rules: list[Path], **groups: Any) -> Settings:
    """Settings for an in-process daemon; ``groups`` override whole groups (``kubernetes={...}``)."""
    tokens = [
        {"name": f"{scope}-caller", "sha256": hashlib.sha256(token.encode()).hexdigest(), "scopes": [scope]}
        for scope, token in TOKENS.items()
    ]
    base: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "port": 0, "tokens": tokens},
        "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"},
        "rules": {"paths": [str(p) for p in rules], "watch": False},
        # A kubeconfig that does not exist: no cluster, every action a dry run.
        "kubernetes": {"kubeconfig": str(tmp_path / "no-kubeconfig"), "request_timeout_s": 2},
    }
    for name, value in groups.items():
        base[name] = {**base.get(name, {}), **value} if isinstance(value, dict) else value
    return load_settings(None, **base)
