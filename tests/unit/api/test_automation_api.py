"""The automation API through the production app, on a real store (``--store=both``): scopes, errors, the report."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from daemon.api.auth import TokenAuth
from daemon.clock import FakeClock
from daemon.config import ApiToken
from daemon.control.pauses import Pauses, PauseWatcher
from daemon.metrics import REGISTRY
from daemon.rules import RuleRegistry
from daemon.store.db import Store
from tests.api_app import app_for
from tests.fixtures import rules_file

READER = {"Authorization": "Bearer r-token"}
CONTROL = {"Authorization": "Bearer c-token"}


def _token(name: str, secret: str, scopes: list[str]) -> ApiToken:
    return ApiToken(name=name, sha256=hashlib.sha256(secret.encode()).hexdigest(), scopes=scopes)  # type: ignore[arg-type]


def _client(
    store: Store, clock: FakeClock, watcher: PauseWatcher | None = None, rules: RuleRegistry | None = None
) -> httpx.AsyncClient:
    auth = TokenAuth([_token("reader", "r-token", ["read"]), _token("oncall-sre", "c-token", ["control"])])
    pauses = Pauses(store, clock)
    app = app_for(store=store, clock=clock, auth=auth, pauses=pauses, pause_watcher=watcher, rules=rules)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rollbackd")


async def test_pause_list_and_resume_need_their_scopes_and_record_the_token_name(
    store: Store, clock: FakeClock
) -> None:
    async with _client(store, clock) as client:
        body = {"scope": "namespace:shop", "reason": "db failover drill", "for_s": 7200}
        assert (await client.post("/api/v1/automation/pauses", json=body, headers=READER)).status_code == 403
        assert (await client.post("/api/v1/automation/pauses", json=body)).status_code == 401
        created = await client.post("/api/v1/automation/pauses", json=body, headers=CONTROL)
        assert created.status_code == 201, created.text
        pause = created.json()
        assert (pause["scope"], pause["created_by"], pause["active"]) == ("namespace:shop", "oncall-sre", True)
        listed = (await client.get("/api/v1/automation/pauses", headers=READER)).json()
        assert (listed["active"], [p["id"] for p in listed["pauses"]]) == (1, [pause["id"]])
        resumed = await client.post(f"/api/v1/automation/pauses/{pause['id']}/resume", headers=CONTROL)
        assert resumed.json()["resumed"][0]["resumed_by"] == "oncall-sre"
        again = await client.post(f"/api/v1/automation/pauses/{pause['id']}/resume", headers=CONTROL)
        assert again.status_code == 404
        assert "no active pause" in again.json()["detail"]
        assert (await client.get("/api/v1/automation/pauses", headers=READER)).json()["active"] == 0


async def test_a_bad_pause_is_a_400_naming_the_field_and_nothing_is_stored(store: Store, clock: FakeClock) -> None:
    before = REGISTRY.get_sample_value("rollbackd_input_rejected_total", {"source": "/api/v1/automation/pauses",
                                                                          "reason": "invalid_body"}) or 0  # fmt: skip
    async with _client(store, clock) as client:
        for body, field in [
            ({"scope": "everything", "reason": "x"}, "scope"),
            ({"scope": "all", "reason": ""}, "reason"),
            ({"scope": "all", "reason": "x", "for_s": 8 * 86400}, "for_s"),
            ({"scope": "all", "reason": "x", "until": "never"}, "until"),
        ]:
            resp = await client.post("/api/v1/automation/pauses", json=body, headers=CONTROL)
            assert resp.status_code == 400, resp.text
            assert [e["field"] for e in resp.json()["errors"]] == [field]
        assert (await client.get("/api/v1/automation/pauses", headers=READER)).json()["pauses"] == []
    after = REGISTRY.get_sample_value("rollbackd_input_rejected_total", {"source": "/api/v1/automation/pauses",
                                                                         "reason": "invalid_body"})  # fmt: skip
    assert after == before + 4


async def test_readyz_shows_the_pauses_this_replica_sees_and_resume_all(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    watcher = PauseWatcher(Pauses(store, clock))
    rules = RuleRegistry([rules_file("rollback-now", tmp_path)], clock)
    rules.load()
    async with _client(store, clock, watcher, rules) as client:
        await client.post("/api/v1/automation/pauses", json={"scope": "all", "reason": "freeze"}, headers=CONTROL)
        await client.post("/api/v1/automation/pauses", json={"scope": "rule:r1", "reason": "tuning"}, headers=CONTROL)
        await watcher.refresh()
        ready = (await client.get("/readyz")).json()
        assert ready["automation"]["paused"] is True
        assert sorted(p["scope"] for p in ready["automation"]["pauses"]) == ["all", "rule:r1"]
        ended = (await client.post("/api/v1/automation/resume", headers=CONTROL)).json()["resumed"]
        assert len(ended) == 2
        await watcher.refresh()
        assert (await client.get("/readyz")).json()["automation"] == {"paused": False, "pauses": []}
        report = (await client.get("/api/v1/automation/shadow?since_s=86400", headers=READER)).json()
        assert report["rules"] == []
