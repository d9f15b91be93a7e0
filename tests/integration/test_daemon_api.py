"""The assembled daemon's HTTP surface: every endpoint demands its scope, rules reload safely.

Runs a whole rollbackd in-process (no cluster: dry-run) and talks to it over
loopback HTTP, as Alertmanager, an SRE and an admin would.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from daemon.app import Daemon
from tests.harness import TOKENS, bearer, daemon_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Every route and who may call it. A new endpoint must be added here, or the test fails.
PUBLIC = "public"
SIGNED = "signed"
EXPECTED_SCOPE = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/webhooks/alertmanager"): "ingest",
    ("POST", "/api/v2/alerts"): "ingest",
    ("POST", "/prometheus/api/v2/alerts"): "ingest",
    ("GET", "/api/v1/incidents"): "read",
    ("GET", "/api/v1/incidents/{incident_id}"): "read",
    ("POST", "/api/v1/incidents/{incident_id}/ack"): "ack",
    ("POST", "/api/v1/incidents/{incident_id}/approve"): "approve",
    ("POST", "/api/v1/incidents/{incident_id}/reject"): "approve",
    ("POST", "/api/v1/rollbacks"): "approve",
    ("GET", "/api/v1/rules"): "read",
    ("POST", "/api/v1/rules/reload"): "admin",
    ("POST", "/api/v1/automation/pauses"): "control",
    ("POST", "/api/v1/automation/pauses/{pause_id}/resume"): "control",
    ("POST", "/api/v1/automation/resume"): "control",
    ("GET", "/api/v1/automation/pauses"): "read",
    ("GET", "/api/v1/automation/shadow"): "read",
    ("POST", "/slack/interactivity"): SIGNED,
    ("POST", "/pagerduty/webhook"): SIGNED,
}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Path]]:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    async with Daemon(daemon_settings(tmp_path, [rules])) as d:
        yield d, rules


def _alert(name: str, value: float, fingerprint: str, deployment: str = "api-gateway") -> dict[str, object]:
    starts = datetime.now(UTC).isoformat()
    return {
        "version": "4", "groupKey": f"{{}}:{{alertname=\"{name}\"}}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "rollbackd", "groupLabels": {"alertname": name}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": name, "namespace": "prod", "deployment": deployment, "severity": "page"},
            "annotations": {"value": str(value)}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph", "fingerprint": fingerprint,
        }],
    }  # fmt: skip


async def test_every_endpoint_demands_its_scope(daemon: tuple[Daemon, Path]) -> None:
    d, _ = daemon
    base = f"http://127.0.0.1:{d.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        spec = (await http.get("/openapi.json")).json()
        routes = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
        assert routes == set(EXPECTED_SCOPE), f"routes without an expected scope: {routes ^ set(EXPECTED_SCOPE)}"
        for (method, path), scope in sorted(EXPECTED_SCOPE.items()):
            url = re.sub(r"\{[^}]+\}", "0123456789ab", path)
            anonymous = await http.request(method, url, json={})
            if scope == PUBLIC:
                assert anonymous.status_code == 200, (method, path, anonymous.status_code)
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.status_code, anonymous.text)
            if scope == SIGNED:
                continue
            wrong = next(s for s in TOKENS if s not in {scope, "admin"})
            refused = await http.request(method, url, json={}, headers=bearer(wrong))
            assert refused.status_code == 403, (method, path, wrong, refused.status_code)
            assert scope in refused.json()["detail"]
            allowed = await http.request(method, url, json={}, headers=bearer(scope))
            assert allowed.status_code not in (401, 403), (method, path, allowed.status_code, allowed.text)


async def test_broken_rule_file_keeps_the_old_rules_deciding(daemon: tuple[Daemon, Path]) -> None:
    d, rules = daemon
    base = f"http://127.0.0.1:{d.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        sent = await http.post(
            "/webhooks/alertmanager", json=_alert("ServiceDown", 0, "a1"), headers=bearer("ingest")
        )
        assert sent.status_code in (200, 202), sent.text
        await d.components.dispatcher.wait_idle()
        first = (await http.get("/api/v1/incidents", headers=bearer("read"))).json()["incidents"]
        assert [i["rule"] for i in first] == ["service-completely-down"]

        matrix = rules / "rollback-matrix.yaml"
        matrix.write_text(matrix.read_text().replace("severity: P0", "severity: P9", 1))
        reload = await http.post("/api/v1/rules/reload", headers=bearer("admin"))
        body = reload.json()
        assert body["ok"] is False, body
        assert "rollback-matrix.yaml" in str(body["errors"]), body
        status = (await http.get("/api/v1/rules", headers=bearer("read"))).json()
        assert "rollback-matrix.yaml" in str(status["last_error"]), status
        metrics = (await http.get("/metrics")).text
        assert "rollbackd_rules_last_reload_success 0.0" in metrics

        # The old rules still decide: a new alert on another deployment gets the same rule.
        sent = await http.post(
            "/webhooks/alertmanager", json=_alert("ServiceDown", 0, "b2", "ai-inference"), headers=bearer("ingest")
        )
        assert sent.status_code in (200, 202), sent.text
        await d.components.dispatcher.wait_idle()
        after = (await http.get("/api/v1/incidents", headers=bearer("read"))).json()["incidents"]
        assert sorted(i["rule"] for i in after) == ["service-completely-down", "service-completely-down"]
