"""``rollbackd incidents list`` prints every id in full at any terminal width, ready to paste into ``rollbackd ack``.

The real CLI against a whole in-process daemon over loopback HTTP; the
terminal's width comes from ``COLUMNS``, as rich reads it in a real terminal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from daemon.app import Daemon
from daemon.cli import main
from tests.harness import TOKENS, bearer
from tests.web_daemon import alert_webhook, web_settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("columns", [40, 80, 200])
async def test_incident_ids_are_whole_at_any_width(tmp_path: Path, columns: int) -> None:
    async with Daemon(web_settings(tmp_path)) as d:
        base = f"http://127.0.0.1:{d.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for name, deployment in (("ServiceDown", "checkout-frontend-with-a-long-name"), ("ServiceDown", "ledger")):
                sent = await http.post(
                    "/webhooks/alertmanager", json=alert_webhook(name, deployment=deployment), headers=bearer("ingest")
                )
                assert sent.status_code in (200, 202)
            await d.components.dispatcher.wait_idle()
            ids = [i["id"] for i in (await http.get("/api/v1/incidents", headers=bearer("read"))).json()["incidents"]]
        assert len(ids) == 2
        env = {"COLUMNS": str(columns), "ROLLBACKD_TOKEN": TOKENS["read"], "TERM": "dumb"}
        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["incidents", "list", "--url", base], env=env, catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    for incident_id in ids:
        assert incident_id in result.output, result.output
