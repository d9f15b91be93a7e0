"""Automation control on the real cluster, through ``rollbackd run``: shadow, one attempt, Kubernetes Events.

One daemon (SQLite) with the ``shadow`` rules, Slack pointed at the local Slack server, the test
cluster's kubeconfig. Deployments start at revision 2 (``:v2``, the bad one).

- A shadow rule produces the decision record (held by ``guard:shadow``, "would roll back … revision
  2 → 1"), SHADOW-labelled Slack messages and a server-side dry run, and the Deployment is unchanged:
  its ``resourceVersion`` does not move.
- ``LatencyProbe`` rolls the other Deployment back (revision 3); ``kubectl describe deployment`` shows
  the ``RollbackDecided`` and ``RolledBack`` Events with "revision 2 → 1 by rule probe-rollback-now,
  incident …" and the annotation naming the incident. The bad template is deployed again (revision 4):
  the second alert is not rolled back automatically; the incident is escalated by the one-attempt
  guard and the Deployment shows ``RollbackRefused``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from daemon.store.db import Store
from daemon.store.tables import OutboxRow
from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.fakes.fixtures import SLACK_TOKEN, fake_slack  # noqa: F401 (a fixture)
from tests.fakes.slack_server import FakeSlack
from tests.fixtures import rules_file
from tests.kube_util import IMAGE, deploy_with_history, revision
from tests.stack.kube import KubeCluster
from tests.waiting import until as _until
from tests.webhooks import firing_alert, webhook_bodies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

until = functools.partial(_until, every=0.2)  # the conditions run kubectl: a slower pace


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def fire(daemon: DaemonProcess, alertname: str, ns: str, name: str) -> None:
    [body] = webhook_bodies([firing_alert(alertname, ns, name, 0, uuid.uuid4().hex[:8])], random.Random(1), 1)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    resp = httpx.post(f"{daemon.url}/webhooks/alertmanager", content=body, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text


def incidents_for(daemon: DaemonProcess, target: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{daemon.url}/api/v1/incidents", headers=ADMIN, timeout=10)
    resp.raise_for_status()
    return [i for i in resp.json()["incidents"] if target in str(i)]


def record(daemon: DaemonProcess, incident_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{daemon.url}/api/v1/incidents/{incident_id}", headers=ADMIN, timeout=10)
    resp.raise_for_status()
    return dict(resp.json())


def held_why(rec: dict[str, Any]) -> tuple[str, str]:
    step = next(t for t in rec["timeline"] if t["action"] == "rollback_held")
    return step["actor"], step["detail"]["why"]


def describe(kube: KubeCluster, ns: str, name: str) -> str:
    return kube.kubectl("-n", ns, "describe", "deployment", name).stdout


def described_with(kube: KubeCluster, ns: str, name: str, reason: str) -> str | None:
    out = describe(kube, ns, name)
    return out if reason in out else None


def resource_version(kube: KubeCluster, ns: str, name: str) -> str:
    return str(kube.kubectl_json("-n", ns, "get", "deployment", name)["metadata"]["resourceVersion"])  # type: ignore[index]


async def summaries(daemon: DaemonProcess, incident_id: str) -> list[str]:
    store = Store(f"sqlite+aiosqlite:///{daemon.db}")
    try:
        async with store.transaction() as s:
            rows = await s.scalars(select(OutboxRow).where(OutboxRow.incident_id == incident_id))
            return [r.payload.get("summary", "") for r in rows if r.channel == "slack"]
    finally:
        await store.close()


async def test_shadow_one_attempt_and_events_on_the_cluster(
    kube: KubeCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_slack: FakeSlack,  # noqa: F811 - the fixture imported above
) -> None:  # fmt: skip
    shadowed, rolled = f"sh-{uuid.uuid4().hex[:4]}", f"rb-{uuid.uuid4().hex[:4]}"
    await asyncio.to_thread(deploy_with_history, kube, namespace, [shadowed, rolled])
    monkeypatch.setenv("AUTOMATION_TEST_SLACK_TOKEN", SLACK_TOKEN)
    slack_cfg = {"enabled": True, "token": {"env": "AUTOMATION_TEST_SLACK_TOKEN"}, "base_url": fake_slack.base_url,
                 "default_channel": "#incidents"}  # fmt: skip
    daemon = DaemonProcess(
        tmp_path / "daemon", rules=[rules_file("shadow", tmp_path / "rules")], kubeconfig=kube.kubeconfig,
        extra={"slack": slack_cfg}, log_level="info",
    )  # fmt: skip
    try:
        await asyncio.to_thread(daemon.start)
        # Shadow: the whole path, nothing written.
        rv = await asyncio.to_thread(resource_version, kube, namespace, shadowed)
        await asyncio.to_thread(fire, daemon, "ShadowProbe", namespace, shadowed)
        target = f"{namespace}/{shadowed}"
        shadow = await until(
            "the shadow decision is recorded",
            lambda: [i for i in incidents_for(daemon, target) if i["state"] == "open" and held(daemon, i["id"])],
            within=30,
        )
        actor, why = held_why(record(daemon, shadow[0]["id"]))
        assert actor == "guard:shadow"
        assert why.startswith(f"would roll back {target} revision 2 → 1: shadow rule shadow-probe"), why
        texts = await summaries(daemon, shadow[0]["id"])
        assert texts
        assert all(t.startswith("SHADOW (nothing is changed): ") for t in texts), texts
        await until("Slack shows the SHADOW label", lambda: any("SHADOW" in m.text for m in fake_slack.top_level()), 15)
        await asyncio.sleep(2)  # a write, if one were coming, has had its chance
        assert await asyncio.to_thread(resource_version, kube, namespace, shadowed) == rv
        assert await asyncio.to_thread(revision, kube, namespace, shadowed) == 2

        # A rollback, its Events and annotation.
        await asyncio.to_thread(fire, daemon, "LatencyProbe", namespace, rolled)
        await until("rolled back", lambda: revision(kube, namespace, rolled) == 3, within=60)
        first = await until("the first incident", lambda: incidents_for(daemon, f"{namespace}/{rolled}"), 10)
        events = await until(
            "kubectl describe shows RolledBack",
            lambda: described_with(kube, namespace, rolled, "RolledBack"),
            within=30,
        )
        line = f"revision 2 → 1 by rule probe-rollback-now, incident {first[0]['id']}, no approval required"
        assert "RollbackDecided" in events
        assert line in " ".join(events.split())
        dep = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "deployment", rolled)
        assert dep["metadata"]["annotations"]["rollbackd.io/incident"] == first[0]["id"]  # type: ignore[index]

        # The same bad template again: not rolled back automatically.
        await asyncio.to_thread(
            kube.kubectl, "-n", namespace, "set", "image", f"deployment/{rolled}", f"web={IMAGE}:v2"
        )
        await asyncio.to_thread(
            kube.kubectl, "-n", namespace, "rollout", "status", f"deployment/{rolled}", "--timeout=120s", timeout=130
        )
        assert await asyncio.to_thread(revision, kube, namespace, rolled) == 4
        await until(
            "the first incident is resolved",
            lambda: all(i["state"] == "resolved" for i in incidents_for(daemon, f"{namespace}/{rolled}")),
            within=60,
        )
        await asyncio.to_thread(fire, daemon, "LatencyProbe", namespace, rolled)
        second = await until(
            "the second trigger is escalated",
            lambda: [i for i in incidents_for(daemon, f"{namespace}/{rolled}") if i["state"] == "escalated"],
            within=60,
        )
        actor, why = held_why(record(daemon, second[0]["id"]))
        assert actor == "guard:one_attempt"
        assert "one automated attempt per bad revision: revision 4 is the template already rolled back" in why
        assert await asyncio.to_thread(revision, kube, namespace, rolled) == 4
        refused = await until(
            "kubectl describe shows RollbackRefused",
            lambda: described_with(kube, namespace, rolled, "RollbackRefused"),
            within=30,
        )
        print("\n" + refused)
    finally:
        await asyncio.to_thread(daemon.stop)


def held(daemon: DaemonProcess, incident_id: str) -> bool:
    return any(t["action"] == "rollback_held" for t in record(daemon, incident_id)["timeline"])
