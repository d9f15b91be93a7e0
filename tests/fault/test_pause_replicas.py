"""The kill switch across replicas: a pause issued on the standby holds a rollback the leader decides.

Two ``rollbackd run`` processes share one PostgreSQL database and a Lease on the
test cluster, with a rule that rolls back at once (``rollback-now``) and Slack
pointed at the local Slack server. Two Deployments, d1 and d2, start at revision 2.

1. On the standby, ``POST /api/v1/automation/pauses`` pauses the test's namespace
   for a few seconds. The leader's ``/readyz`` shows the pause within one second.
2. An alert for d1 goes to the leader, which decides the rollback: the incident is
   escalated with "would roll back … revision 2 → 1: automation paused by admin
   (…) until …", and d1 is untouched (same revision, same resourceVersion).
   The pause was posted to Slack.
3. The pause expires by itself; the leader's ``/readyz`` says so, and an alert for
   d2 is rolled back automatically (revision 3), while d1 still is at revision 2.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.fakes.fixtures import SLACK_TOKEN, fake_slack  # noqa: F401 (a fixture)
from tests.fakes.slack_server import FakeSlack
from tests.fixtures import rules_file
from tests.kube_util import deploy_with_history, revision
from tests.replicas import replica_pair, wait_for_leader
from tests.stack.kube import KubeCluster
from tests.stack.postgres import Postgres
from tests.waiting import until
from tests.webhooks import probe_webhook

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.timeout(300)]

PAUSE_S = 10.0
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def post_alert(replica: DaemonProcess, ns: str, name: str) -> None:
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    resp = httpx.post(f"{replica.url}/webhooks/alertmanager", content=probe_webhook(ns, name), headers=headers)
    assert resp.status_code == 200, resp.text


def api(replica: DaemonProcess, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, f"{replica.url}{path}", json=body, headers=ADMIN, timeout=10)


def incident_for(replica: DaemonProcess, target: str) -> dict[str, Any] | None:
    resp = httpx.get(f"{replica.url}/api/v1/incidents", headers=ADMIN, timeout=10)
    resp.raise_for_status()
    found = [i for i in resp.json()["incidents"] if target in str(i)]
    return found[0] if found else None


def paused(replica: DaemonProcess) -> bool:
    return bool(httpx.get(f"{replica.url}/readyz", timeout=5).json()["automation"]["paused"])


def resource_version(kube: KubeCluster, ns: str, name: str) -> str:
    return str(kube.kubectl_json("-n", ns, "get", "deployment", name)["metadata"]["resourceVersion"])  # type: ignore[index]


async def test_a_pause_on_the_standby_holds_the_leaders_rollback_until_it_expires(
    kube: KubeCluster, namespace: str, postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_slack: FakeSlack,  # noqa: F811 - the fixture imported above
) -> None:  # fmt: skip
    d1, d2 = f"p1-{uuid.uuid4().hex[:4]}", f"p2-{uuid.uuid4().hex[:4]}"
    await asyncio.to_thread(deploy_with_history, kube, namespace, [d1, d2])
    monkeypatch.setenv("PAUSE_TEST_SLACK_TOKEN", SLACK_TOKEN)  # the replicas inherit the environment
    slack_cfg = {"enabled": True, "token": {"env": "PAUSE_TEST_SLACK_TOKEN"}, "base_url": fake_slack.base_url,
                 "default_channel": "#incidents"}  # fmt: skip
    url = await postgres.new_database()
    pair = replica_pair(tmp_path, rules_file("rollback-now", tmp_path / "rules"), kube, namespace, url, slack=slack_cfg)
    try:
        for replica in pair:
            replica.start()
        leader = await asyncio.to_thread(wait_for_leader, pair)
        standby = pair[1] if leader is pair[0] else pair[0]
        rv_before = await asyncio.to_thread(resource_version, kube, namespace, d1)

        # 1. The pause, on the standby; the leader sees it within a second.
        body = {"scope": f"namespace:{namespace}", "reason": "db failover drill", "for_s": PAUSE_S}
        resp = await asyncio.to_thread(api, standby, "POST", "/api/v1/automation/pauses", body)
        assert resp.status_code == 201, resp.text
        issued = time.monotonic()
        pause = resp.json()
        await until("the leader's /readyz shows the pause", lambda: paused(leader), within=1.0)
        seen_after = time.monotonic() - issued

        # 2. The leader decides a rollback of d1: held, recorded, notified; d1 untouched.
        await asyncio.to_thread(post_alert, leader, namespace, d1)
        target = f"{namespace}/{d1}"
        held = await until(
            "d1's incident is escalated",
            lambda: (i := incident_for(leader, target)) is not None and i["state"] == "escalated" and i,
            within=30,
        )
        record = (await asyncio.to_thread(api, leader, "GET", f"/api/v1/incidents/{held['id']}")).json()
        why = next(t for t in record["timeline"] if t["action"] == "rollback_held")["detail"]["why"]
        assert why.startswith(
            f"would roll back {target} revision 2 → 1: automation paused by admin (db failover drill) until "
        ), why
        assert await asyncio.to_thread(revision, kube, namespace, d1) == 2
        assert await asyncio.to_thread(resource_version, kube, namespace, d1) == rv_before
        await until(
            "the pause was posted to Slack",
            lambda: any(
                f"paused for namespace:{namespace} by admin (db failover drill)" in m.text
                for m in fake_slack.top_level()
            ),
            within=15,
        )

        # 3. Expiry: the pause ends by itself, and automation rolls d2 back.
        left = PAUSE_S - (time.monotonic() - issued)
        await until("the pause expired on the leader", lambda: not paused(leader), within=left + 2)
        await asyncio.to_thread(post_alert, standby, namespace, d2)
        await until("d2 rolled back", lambda: revision(kube, namespace, d2) == 3, within=60)
        assert await asyncio.to_thread(revision, kube, namespace, d1) == 2
        listed = (await asyncio.to_thread(api, standby, "GET", "/api/v1/automation/pauses")).json()
        assert [(p["id"], p["status"]) for p in listed["pauses"]] == [(pause["id"], "expired")]
    finally:
        for replica in pair:
            replica.stop()
    print(f"\npause on {standby.instance} seen by the leader {leader.instance} after {seen_after:.3f} s")
