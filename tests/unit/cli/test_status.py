"""``rollbackd status`` against a real daemon on loopback (SQLite, no cluster: dry run)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from daemon.app import Daemon
from daemon.cli.status import status
from daemon.config import load_settings

REPO = Path(__file__).resolve().parents[3]
READ_TOKEN = "status-test-read-token"
INGEST_TOKEN = "status-test-ingest-token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    settings = load_settings(
        None,
        http={
            "port": 0,
            "tokens": [
                {"name": "reader", "sha256": _digest(READ_TOKEN), "scopes": ["read"]},
                {"name": "am", "sha256": _digest(INGEST_TOKEN), "scopes": ["ingest"]},
            ],
        },
        store={"url": f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"},
        rules={"paths": [str(REPO / "rules")], "watch": False},
        kubernetes={"kubeconfig": str(tmp_path / "no-kubeconfig")},
    )
    async with Daemon(settings) as d:
        yield d


async def _status(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, status, list(args))


def _token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(READ_TOKEN + "\n")
    return str(path)


async def _open_incident(url: str) -> None:
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "rollbackd",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ServiceDown", "namespace": "shop", "deployment": "checkout"},
                "annotations": {},
                "startsAt": "2025-06-02T10:20:00Z",
            }
        ],
    }
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/webhooks/alertmanager", json=body, headers=headers)
        assert response.status_code < 300, response.text
        read = {"Authorization": f"Bearer {READ_TOKEN}"}
        for _ in range(200):  # the dispatcher works asynchronously: wait for the incident (bounded)
            listed = (await client.get("/api/v1/incidents?open=true", headers=read)).json()
            if listed["incidents"]:
                return
            await asyncio.sleep(0.05)
    pytest.fail("no incident opened for the posted alert")


async def test_summary_of_a_ready_daemon(daemon: Daemon, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    await _open_incident(url)
    result = await _status("--url", url, "--token-file", _token_file(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"rollbackd at {url}: ready" in out
    assert "DRY RUN" in out  # no cluster reachable: the banner must be impossible to miss
    assert "rules: 22 loaded (16 thresholds, 6 decisions)" in out
    assert "open incidents: 1" in out
    assert "service-completely-down  shop/checkout NOT ACKNOWLEDGED needs 1x Engineering Lead" in out


async def test_json_output(daemon: Daemon, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    result = await _status("--url", url, "--token-file", _token_file(tmp_path), "--output", "json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["ready"]["status"] == "ready"
    assert doc["ready"]["dry_run"] is True
    assert doc["rules"]["rule_count"] == 22
    assert doc["incidents"] == {"incidents": []}


async def test_without_a_token_exit_1_and_say_why(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLBACKD_TOKEN", raising=False)
    result = await _status("--url", f"http://127.0.0.1:{daemon.port}")
    assert result.exit_code == 1
    assert "rules: HTTP 401" in result.output
    assert "ROLLBACKD_TOKEN with scope read" in result.output


async def test_unreachable_exit_3() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await _status("--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert result.exit_code == 3
    assert "cannot reach the daemon" in result.stderr
