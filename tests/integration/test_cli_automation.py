"""The kill switch as a user runs it: ``rollbackd pause``, ``pauses``, ``status``, ``resume``, ``shadow report``.

The real CLI (in a thread: the daemon shares the test's event loop) against a whole in-process daemon over
loopback HTTP, on both stores
(``--store=both``), with Slack pointed at the local Slack server. ``rollbackd pause
--all`` is one command; the pause is posted to Slack, shown in ``/readyz``'s detail,
in ``rollbackd status`` and in the ``rollbackd_automation_pauses`` gauge within one
second; ``rollbackd resume --all`` is posted too and clears all three.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from daemon.app import Daemon
from daemon.cli import main
from tests.fakes.fixtures import SLACK_TOKEN, fake_slack  # noqa: F401 (a fixture)
from tests.fakes.slack_server import FakeSlack
from tests.fixtures import rules_file
from tests.harness import TOKENS, daemon_settings
from tests.metrics_util import samples, value
from tests.waiting import until

pytestmark = pytest.mark.integration


async def cli(base: str, scope: str, *args: str) -> Result:
    env = {"ROLLBACKD_TOKEN": TOKENS[scope], "ROLLBACKD_URL": base, "COLUMNS": "200", "TERM": "dumb"}
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def readyz(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/readyz", timeout=5).json()["automation"])


def gauge(base: str) -> float:
    return value(samples(httpx.get(f"{base}/metrics", timeout=5).text), "rollbackd_automation_pauses", scope="all")


def posted(slack: FakeSlack, text: str) -> bool:
    return any(text in m.text for m in slack.top_level())


async def test_pause_all_is_one_command_seen_everywhere_and_resume_ends_it(
    tmp_path: Path, store_backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    fake_slack: FakeSlack,  # noqa: F811 - the fixture imported above
) -> None:  # fmt: skip
    if store_backend == "postgres":
        url = await request.getfixturevalue("postgres").new_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"
    monkeypatch.setenv("CLI_AUTOMATION_SLACK_TOKEN", SLACK_TOKEN)
    slack = {"enabled": True, "token": {"env": "CLI_AUTOMATION_SLACK_TOKEN"}, "base_url": fake_slack.base_url,
             "default_channel": "#incidents"}  # fmt: skip
    settings = daemon_settings(tmp_path, [rules_file("rollback-now", tmp_path / "rules")], store={"url": url},
                               slack=slack)  # fmt: skip
    async with Daemon(settings) as d:
        base = f"http://127.0.0.1:{d.port}"
        out = (await cli(base, "control", "pause", "--all", "--reason", "db failover drill", "--for", "2h")).output
        issued = time.monotonic()
        assert out.startswith("pause "), out
        pause_id = out.split()[1].rstrip(":")
        assert "automated rollback paused for all by control-caller (db failover drill) until " in out, out
        await until("/readyz shows the pause", lambda: readyz(base)["paused"], within=1.0)
        seen_s = time.monotonic() - issued
        [readyz_pause] = (await asyncio.to_thread(readyz, base))["pauses"]
        assert readyz_pause["id"] == pause_id
        assert await asyncio.to_thread(gauge, base) == 1

        listed = (await cli(base, "read", "pauses")).output
        assert "1 active" in listed, listed
        row = next(line for line in listed.splitlines() if pause_id in line)
        assert all(word in row for word in ("all", "active", "control-caller", "db failover drill")), row
        status = (await cli(base, "read", "status")).output
        ends = datetime.fromisoformat(readyz_pause["until"]).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"PAUSED: automated rollback for all by control-caller (db failover drill) until {ends} [" in status, (
            status
        )
        assert f"[pause {pause_id}; rollbackd resume {pause_id}]" in status, status
        await until(
            "the pause is posted to Slack",
            lambda: posted(fake_slack, "automated rollback paused for all by control-caller (db failover drill)"),
            within=10,
        )

        out = (await cli(base, "control", "resume", "--all")).output
        assert out.strip() == f"pause {pause_id} (all) resumed by control-caller", out
        await until("/readyz shows no pause", lambda: not readyz(base)["paused"], within=1.0)
        assert await asyncio.to_thread(gauge, base) == 0
        assert "PAUSED" not in (await cli(base, "read", "status")).output
        assert "resumed by control-caller" in (await cli(base, "read", "pauses")).output
        await until(
            "the resume is posted to Slack",
            lambda: posted(fake_slack, f"automated rollback resumed for all by control-caller (pause {pause_id})"),
            within=10,
        )
        report = (await cli(base, "read", "shadow", "report", "--since", "7d")).output
        assert report.strip() == "no shadow decisions in that period", report
    print(f"\n[{store_backend}] `rollbackd pause --all` shown in /readyz after {seen_s:.3f} s")
