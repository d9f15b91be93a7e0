"""The whole chain on real components: metric breach → Prometheus → Alertmanager → rollbackd
→ rollback in the cluster → Slack.

A test exporter raises a Deployment's error ratio; Prometheus (1 s scrape and
evaluation, ``for: 2s``) fires; Alertmanager (group_wait 1 s) posts the
webhook to a running rollbackd; rollbackd decides from a rule file, rolls the
Deployment back through the Kubernetes API, and posts to a local Slack that
implements ``chat.postMessage``. Asserts the Deployment's template is the
previous revision's, its pods are Ready, and Slack received one message naming
the Deployment and the revisions — and prints the time from breach to Ready.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.clock import SystemClock
from daemon.config import load_settings
from tests.daemon_process import token_config
from tests.fakes.slack_server import FakeSlack
from tests.fixtures import prometheus_rules, rules_file
from tests.metrics_util import Samples, delta, samples, value
from tests.stack.exporter import Exporter
from tests.stack.kube import KubeCluster
from tests.stack.prometheus import Alertmanager, AlertmanagerTarget, Prometheus, WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SLACK_TOKEN = "xoxb-e2e-0000-slacktoken"
INGEST_TOKEN = "e2e-ingest-token-" + uuid.uuid4().hex
READ_TOKEN = "e2e-read-token-" + uuid.uuid4().hex

def _deploy(kube: KubeCluster, ns: str, name: str) -> None:
    """Deployment at revision 2 (image v2) with revision 1 (image v1) in its history."""
    kube.kubectl("-n", ns, "create", "deployment", name, "--image=registry.local/web:v1", "--replicas=2")
    kube.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=120s")
    kube.kubectl("-n", ns, "set", "image", f"deployment/{name}", f"web=registry.local/{name}:v2")
    kube.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=120s")


def _template_of_revision(kube: KubeCluster, ns: str, name: str, revision: int) -> dict[str, Any]:
    rs_list = kube.kubectl_json("-n", ns, "get", "replicasets")
    for rs in rs_list["items"]:  # type: ignore[attr-defined]
        meta = rs["metadata"]
        owned = any(o["name"] == name for o in meta.get("ownerReferences", []))
        if owned and meta["annotations"].get("deployment.kubernetes.io/revision") == str(revision):
            tpl: dict[str, Any] = rs["spec"]["template"]
            tpl["metadata"]["labels"].pop("pod-template-hash", None)
            return tpl
    raise AssertionError(f"no ReplicaSet of {name} at revision {revision}")


def _rolled_back_and_ready(dep: dict[str, Any]) -> bool:
    spec, status = dep["spec"], dep.get("status", {})
    image = spec["template"]["spec"]["containers"][0]["image"]
    return (
        image.endswith(":v1")
        and status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("readyReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
        and status.get("replicas") == spec["replicas"]
    )


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(SLACK_TOKEN).start()
    yield server
    await server.stop()


async def test_metric_breach_rolls_back_and_tells_slack(
    kube: KubeCluster,
    namespace: str,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    exporter: Exporter,
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "web"
    alertname = f"E2EErrorRate{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(_deploy, kube, namespace, name)
    previous_template = await asyncio.to_thread(_template_of_revision, kube, namespace, name, 1)

    rules = rules_file("e2e-error-rate", tmp_path / "rules", alertname=alertname)
    monkeypatch.setenv("E2E_SLACK_TOKEN", SLACK_TOKEN)
    settings = load_settings(
        None,
        http={
            "host": "127.0.0.1",
            "port": 0,
            "tokens": [
                token_config("alertmanager", INGEST_TOKEN, ["ingest"]), token_config("reader", READ_TOKEN, ["read"])
            ],
        },
        store={"url": f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"},
        rules={"paths": [str(rules)], "watch": False},
        kubernetes={"kubeconfig": str(kube.kubeconfig), "rollout_timeout_s": 120},
        slack={"enabled": True, "token": {"env": "E2E_SLACK_TOKEN"}, "base_url": slack.base_url,
               "default_channel": "#incidents"},
    )

    async with Daemon(settings, clock=SystemClock()) as daemon:
        assert daemon.components.dry_run is False
        base = f"http://127.0.0.1:{daemon.port}"
        exporter.set("http_error_ratio", 0.0, labels={"namespace": namespace, "deployment": name})
        await asyncio.to_thread(
            alertmanager.configure, webhook=WebhookReceiver(f"{base}/webhooks/alertmanager", INGEST_TOKEN)
        )
        await asyncio.to_thread(
            prometheus.configure,
            scrape_targets=[exporter.address],
            rules=prometheus_rules("e2e-error-rate", alertname=alertname, instance=exporter.address),
            alertmanagers=[AlertmanagerTarget(alertmanager.url.removeprefix("http://"))],
        )
        await asyncio.to_thread(exporter.wait_scraped, timeout=60)
        await asyncio.to_thread(exporter.wait_scraped, timeout=60)

        before = await _scrape(base)
        breach = time.monotonic()
        exporter.set("http_error_ratio", 0.2, labels={"namespace": namespace, "deployment": name})

        dep: dict[str, Any] = {}
        deadline = breach + 120
        while time.monotonic() < deadline:
            dep = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "deployment", name)
            if _rolled_back_and_ready(dep):
                break
            await asyncio.sleep(0.1)
        ready_after = time.monotonic() - breach
        print(f"\ne2e: metric breach -> Deployment rolled back and Ready in {ready_after:.2f}s")
        assert _rolled_back_and_ready(dep), f"not rolled back and Ready after 120 s: {dep.get('status')}"

        # kubectl's semantics: the template is revision 1's, and the Deployment is now revision 3.
        template = dep["spec"]["template"]
        assert template["spec"]["containers"] == previous_template["spec"]["containers"]
        assert template["metadata"].get("labels") == previous_template["metadata"]["labels"]
        assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        await _assert_pods_ready(kube, namespace, name)

        # Slack: one incident message naming the Deployment and the revisions.
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as api:
            incidents = (await api.get("/api/v1/incidents")).json()
        assert len(incidents["incidents"]) == 1, incidents
        loop_deadline = time.monotonic() + 30
        while time.monotonic() < loop_deadline and not _slack_mentions(slack, namespace, name):
            await asyncio.sleep(0.2)
        tops = slack.top_level()
        assert len(tops) == 1, [m.text for m in tops]
        text = _slack_text(slack)
        assert f"{namespace}/{name}" in text, text
        assert "revision 2" in text, text
        assert "revision 1" in text, text

        await _wait_outbox_drained(base)
        _assert_metrics(before, await _scrape(base))
        prometheus.reset()


async def _assert_pods_ready(kube: KubeCluster, namespace: str, name: str) -> None:
    pods = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "pods", "-l", f"app={name}")
    live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]  # type: ignore[attr-defined]
    v1_ready = [
        p for p in live
        if p["spec"]["containers"][0]["image"].endswith(":v1")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    assert len(v1_ready) == 2, [p["metadata"]["name"] for p in live]


async def _wait_outbox_drained(base: str, within_s: float = 30.0) -> None:
    """The last notifications (verification passed) are sent after the rollback: wait for them."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and value(await _scrape(base), "rollbackd_outbox_pending") > 0:
        await asyncio.sleep(0.2)


async def _scrape(base: str) -> Samples:
    async with httpx.AsyncClient(base_url=base) as api:
        return samples((await api.get("/metrics")).text)


def _assert_metrics(before: Samples, after: Samples) -> None:
    """What operators graph moved by what this one incident did (deltas: the registry outlives the test)."""
    moved = {
        "alerts accepted": delta(before, after, "rollbackd_alerts_received_total", source="alertmanager",
                                 outcome="accepted"),
        "decisions": delta(before, after, "rollbackd_decisions_total", rule="e2e-error-rate", action="rollback_now"),
        "rollbacks": delta(before, after, "rollbackd_rollbacks_total", outcome="rolled_back"),
        "patch latency observations": delta(before, after, "rollbackd_decision_to_patch_seconds_count"),
        "rollback durations": delta(before, after, "rollbackd_rollback_duration_seconds_count"),
        "slack sent": delta(before, after, "rollbackd_notifications_total", channel="slack", outcome="sent"),
        "rolling_back -> verifying": delta(before, after, "rollbackd_incident_transitions_total",
                                           from_state="rolling_back", to_state="verifying"),
    }  # fmt: skip
    assert moved["alerts accepted"] >= 1, moved
    assert moved["decisions"] >= 1, moved
    assert moved["rollbacks"] == 1, moved
    assert moved["patch latency observations"] == 1, moved
    assert moved["rollback durations"] == 1, moved
    assert moved["slack sent"] >= 1, moved
    assert moved["rolling_back -> verifying"] == 1, moved
    for gauge, expected in (("rollbackd_inbox_pending", 0), ("rollbackd_queue_depth", 0),
                            ("rollbackd_rules_last_reload_success", 1), ("rollbackd_leader", 1)):  # fmt: skip
        assert value(after, gauge) == expected, f"{gauge} is {value(after, gauge)}, expected {expected}"
    latency = delta(before, after, "rollbackd_decision_to_patch_seconds_sum")
    print(f"e2e: alert arrival -> rollback patch {latency * 1000:.0f} ms; metrics moved: {moved}")


def _slack_text(slack: FakeSlack) -> str:
    parts: list[str] = []
    for m in slack.messages.values():
        parts.append(m.text)
        parts.append(str(m.blocks))
        parts.extend(str(e) for e in m.edits)
    return "\n".join(parts)


def _slack_mentions(slack: FakeSlack, namespace: str, name: str) -> bool:
    text = _slack_text(slack)
    return f"{namespace}/{name}" in text and "revision 1" in text
