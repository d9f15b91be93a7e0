"""The incidents HTTP API on a minimal app: scopes, status codes, and no approval code in any response."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from daemon.api.auth import TokenAuth
from daemon.clock import FakeClock
from daemon.config import ApiToken
from daemon.incidents.service import IncidentService
from daemon.model import Target
from daemon.target import WorkloadKind
from tests.api_app import app_for
from tests.unit.incidents.conftest import FakeExecutor, Secrets
from tests.unit.incidents.test_service import CTO_AND_DATA, alert, decision

TOKENS = {"reader": ["read"], "responder": ["read", "ack", "approve"]}


def _token(name: str, scopes: list[str]) -> ApiToken:
    return ApiToken(name=name, sha256=hashlib.sha256(f"tok-{name}".encode()).hexdigest(), scopes=scopes)  # type: ignore[arg-type]


@pytest.fixture
async def client(service: IncidentService) -> AsyncIterator[httpx.AsyncClient]:
    app = app_for(auth=TokenAuth([_token(n, s) for n, s in TOKENS.items()]), incidents=service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rollbackd") as c:
        yield c


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer tok-{name}"}


async def test_wrong_codes_403_then_423_and_no_code_anywhere(
    client: httpx.AsyncClient, service: IncidentService, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    good = approver_secrets.totp["ana"].at(clock.now())
    wrong = "000000" if good != "000000" else "111111"
    bodies: list[str] = []
    with capture_logs() as logs:
        for expected in (4, 3, 2, 1, 0):
            r = await client.post(
                f"/api/v1/incidents/{view.id}/approve",
                json={"approver": "ana", "code": wrong},
                headers=auth("responder"),
            )
            assert r.status_code == 403
            assert r.json()["remaining_tries"] == expected
            bodies.append(r.text)
        r = await client.post(
            f"/api/v1/incidents/{view.id}/approve", json={"approver": "ana", "code": good}, headers=auth("responder")
        )
        assert r.status_code == 423
        assert "locked_until" in r.json()
        bodies.append(r.text)
        r = await client.post(
            f"/api/v1/incidents/{view.id}/approve",
            json={"approver": "dan", "code": approver_secrets.totp["dan"].at(clock.now()), "role": "data-lead"},
            headers=auth("responder"),
        )
        assert r.status_code == 200
        assert r.json()["missing_roles"] == {"cto": 1}
        bodies.append(r.text)
        bodies.append((await client.get(f"/api/v1/incidents/{view.id}", headers=auth("reader"))).text)
        bodies.append((await client.get("/api/v1/incidents", headers=auth("reader"))).text)
    for secret in (good, wrong, approver_secrets.totp["dan"].at(clock.now())):
        assert not any(secret in b for b in bodies)
        assert not any(secret in repr(line) for line in logs)


async def test_scopes_are_enforced(client: httpx.AsyncClient, service: IncidentService) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    assert (await client.get("/api/v1/incidents")).status_code == 401
    r = await client.post(f"/api/v1/incidents/{view.id}/ack", headers=auth("reader"))
    assert r.status_code == 403
    r = await client.post(
        f"/api/v1/incidents/{view.id}/approve", json={"approver": "ana", "code": "1"}, headers=auth("reader")
    )
    assert r.status_code == 403


async def test_ack_list_show_and_unknown(client: httpx.AsyncClient, service: IncidentService) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    r = await client.post(f"/api/v1/incidents/{view.id}/ack", headers=auth("responder"))
    assert r.status_code == 200
    assert r.json()["acknowledged_by"] == "responder"
    listed = (await client.get("/api/v1/incidents?open=true", headers=auth("reader"))).json()["incidents"]
    assert [i["id"] for i in listed] == [view.id]
    shown = (await client.get(f"/api/v1/incidents/{view.id}", headers=auth("reader"))).json()
    assert [t["action"] for t in shown["timeline"]] == ["decision", "acknowledged"]
    assert (await client.get("/api/v1/incidents/nope", headers=auth("reader"))).status_code == 404
    bad = await client.post(
        f"/api/v1/incidents/{view.id}/approve",
        json={"approver": "ana", "code": "1", "extra": 1},
        headers=auth("responder"),
    )
    # The daemon's app answers a malformed body 400, naming the field (FastAPI alone would say 422).
    assert bad.status_code == 400
    assert "extra" in str(bad.json()["errors"])


async def test_break_glass_rollback_through_the_api(
    client: httpx.AsyncClient,
    service: IncidentService,
    executor: FakeExecutor,
    approver_secrets: Secrets,
    clock: FakeClock,
) -> None:
    codes = [{"approver": n, "code": approver_secrets.totp[n].at(clock.now())} for n in ("sre1", "sre2")]
    r = await client.post(
        "/api/v1/rollbacks",
        json={"targets": ["shop/web"], "reason": "bad deploy", "approvals": codes[:1]},
        headers=auth("responder"),
    )
    assert r.status_code == 403
    assert "quorum" in r.json()["detail"]
    await clock.advance(30)
    codes = [{"approver": n, "code": approver_secrets.totp[n].at(clock.now())} for n in ("sre1", "sre2")]
    r = await client.post(
        "/api/v1/rollbacks",
        json={"targets": ["shop/web"], "reason": "bad deploy", "approvals": codes},
        headers=auth("responder"),
    )
    assert r.status_code == 201, r.text
    await service.idle()
    assert [req.targets for req in executor.requests] == [(Target("shop", "web"),)]
    assert not any(c["code"] in r.text for c in codes)
    assert json.loads(r.text)["decision"]["rule"] == "manual-rollback"


async def test_break_glass_names_a_statefulset_and_a_revision(
    client: httpx.AsyncClient, service: IncidentService, executor: FakeExecutor, approver_secrets: Secrets,
    clock: FakeClock,
) -> None:  # fmt: skip
    codes = [{"approver": n, "code": approver_secrets.totp[n].at(clock.now())} for n in ("sre1", "sre2")]
    body = {"targets": ["statefulset/shop/ledger"], "reason": "bad release", "approvals": codes, "to_revision": 3}
    bad = await client.post(
        "/api/v1/rollbacks", json={**body, "targets": ["cronjob/shop/nightly"]}, headers=auth("responder")
    )
    assert bad.status_code == 400
    assert "unknown workload kind 'cronjob'" in bad.json()["detail"]
    two = await client.post(
        "/api/v1/rollbacks", json={**body, "targets": ["shop/web", "shop/api"]}, headers=auth("responder")
    )
    assert two.status_code == 400
    assert two.json()["detail"] == "to_revision: names a revision of one target only"
    r = await client.post("/api/v1/rollbacks", json=body, headers=auth("responder"))
    assert r.status_code == 201, r.text
    await service.idle()
    [request] = executor.requests
    assert request.targets == (Target("shop", "ledger", WorkloadKind.STATEFULSET),)
    assert request.to_revision == 3
    assert r.json()["decision"]["targets"] == ["statefulset/shop/ledger"]
    assert r.json()["decision"]["to_revision"] == 3
