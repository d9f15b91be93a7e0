"""GET /api/v1/rules shows the loaded set and the last reload's error; POST reload needs admin."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from daemon.api.auth import TokenAuth
from daemon.clock import FakeClock
from daemon.config import ApiToken
from daemon.rules import RuleRegistry
from tests.api_app import app_for

RULES = """\
apiVersion: rollbackd/v1
channels: {s: {slack: "#s"}}
routing: {P1: [s]}
decisions:
  - {name: down, match: ['alertname="Down"'], severity: P1, action: notify}
"""


def _token(name: str, secret: str, scopes: list[str]) -> ApiToken:
    return ApiToken(name=name, sha256=hashlib.sha256(secret.encode()).hexdigest(), scopes=scopes)  # type: ignore[arg-type]


def test_status_and_reload_report_the_failed_reload_and_keep_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    registry = RuleRegistry([path], FakeClock())
    registry.load()
    auth = TokenAuth([_token("reader", "r-token", ["read"]), _token("ops", "a-token", ["admin"])])
    app = app_for(rules=registry, auth=auth)
    client = TestClient(app)
    reader = {"Authorization": "Bearer r-token"}
    admin = {"Authorization": "Bearer a-token"}

    body = client.get("/api/v1/rules", headers=reader).json()
    assert (body["loaded"], body["rule_count"], body["decisions"], body["last_error"]) == (True, 1, ["down"], None)
    assert client.get("/api/v1/rules").status_code == 401

    path.write_text(RULES.replace("action: notify", "action: explode"))
    assert client.post("/api/v1/rules/reload", headers=reader).status_code == 403
    reply = client.post("/api/v1/rules/reload", headers=admin).json()
    assert reply["ok"] is False
    assert f"{path}:5:" in reply["errors"][0]
    assert "decisions[0].action: found 'explode'" in reply["errors"][0]

    body = client.get("/api/v1/rules", headers=reader).json()
    assert body["last_reload_ok"] is False
    assert "found 'explode'" in body["last_error"]
    assert body["decisions"] == ["down"]  # the running set stays
