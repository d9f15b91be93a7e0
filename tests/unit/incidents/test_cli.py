"""The responders' commands against a real HTTP server running the incidents API on this loop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from click.testing import CliRunner

from daemon.api.auth import TokenAuth
from daemon.cli.incidents import ack, approve, incidents, rollback
from daemon.clock import FakeClock
from daemon.incidents.service import IncidentService
from daemon.model import Target
from daemon.target import WorkloadKind
from tests.api_app import app_for
from tests.unit.incidents.conftest import FakeExecutor, Secrets
from tests.unit.incidents.test_api import _token
from tests.unit.incidents.test_service import CTO_AND_DATA, alert, decision


@pytest.fixture
async def url(service: IncidentService) -> AsyncIterator[str]:
    app = app_for(auth=TokenAuth([_token("responder", ["read", "ack", "approve"])]), incidents=service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


async def run(*args: object, **kwargs: object) -> object:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, *args, env={"ROLLBACKD_TOKEN": "tok-responder"}, **kwargs)


async def test_approve_prompts_for_a_hidden_code_and_show_renders_the_timeline(
    url: str, service: IncidentService, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    code = approver_secrets.totp["ana"].at(clock.now())
    result = await run(approve, [view.id, "--approver", "ana", "--url", url], input=f"{code}\n")
    assert result.exit_code == 0, result.output
    assert code not in result.output  # hidden input: not echoed
    assert "waiting for 1x data-lead" in result.output
    shown = await run(incidents, ["show", view.id, "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "approval" in shown.output
    assert "ana approved as cto" in shown.output
    listed = await run(incidents, ["list", "--url", url, "--output", "json"])
    assert [i["id"] for i in json.loads(listed.output)["incidents"]] == [view.id]


async def test_wrong_code_reports_tries_left_and_fails(url: str, service: IncidentService) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    result = await run(approve, [view.id, "--approver", "ana", "--url", url], input="000000\n")
    assert result.exit_code == 1
    assert "tries left before lockout: 4" in result.output
    assert "000000" not in result.output


async def test_ack_and_break_glass_rollback(
    url: str, service: IncidentService, executor: FakeExecutor, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    acked = await run(ack, [view.id, "--url", url])
    assert acked.exit_code == 0, acked.output
    assert "acknowledged by responder" in acked.output
    codes = "".join(f"{approver_secrets.totp[n].at(clock.now())}\n" for n in ("sre1", "sre2"))
    args = ["shop/web", "--reason", "bad deploy", "--approver", "sre1", "--approver", "sre2", "--url", url]
    result = await run(rollback, args, input=codes)
    assert result.exit_code == 0, result.output
    await service.idle()
    assert [r.automatic for r in executor.requests] == [False]


async def test_break_glass_rollback_of_a_statefulset_to_a_revision(
    url: str, service: IncidentService, executor: FakeExecutor, approver_secrets: Secrets, clock: FakeClock
) -> None:
    codes = "".join(f"{approver_secrets.totp[n].at(clock.now())}\n" for n in ("sre1", "sre2"))
    common = ["--reason", "bad release", "--approver", "sre1", "--approver", "sre2", "--url", url]
    bad = await run(rollback, ["ledger", *common], input=codes)
    assert bad.exit_code == 2
    assert "expected NAMESPACE/NAME (a Deployment) or KIND/NAMESPACE/NAME" in bad.output
    two = await run(rollback, ["shop/web", "shop/api", "--to-revision", "3", *common], input=codes)
    assert two.exit_code == 2
    assert "names a revision of one target only" in two.output
    result = await run(rollback, ["statefulset/shop/ledger", "--to-revision", "3", *common], input=codes)
    assert result.exit_code == 0, result.output
    await service.idle()
    [request] = executor.requests
    assert request.targets == (Target("shop", "ledger", WorkloadKind.STATEFULSET),)
    assert request.to_revision == 3


async def test_every_command_reads_the_daemon_url_from_rollbackd_url(url: str, service: IncidentService) -> None:
    """docs/responder.md exports ROLLBACKD_URL once; list, show and ack then need no --url."""
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    env = {"ROLLBACKD_TOKEN": "tok-responder", "ROLLBACKD_URL": url}
    runner = CliRunner()
    listed = await asyncio.to_thread(runner.invoke, incidents, ["list", "--output", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [i["id"] for i in json.loads(listed.output)["incidents"]] == [view.id]
    shown = await asyncio.to_thread(runner.invoke, incidents, ["show", view.id], env=env)
    assert shown.exit_code == 0, shown.output
    acked = await asyncio.to_thread(runner.invoke, ack, [view.id], env=env)
    assert acked.exit_code == 0, acked.output
    assert "acknowledged by responder" in acked.output
    # --url still wins over the environment.
    wrong = await asyncio.to_thread(runner.invoke, incidents, ["list", "--url", "http://127.0.0.1:9"], env=env)
    assert wrong.exit_code != 0
