"""The whole chain for a StatefulSet: metric breach → Prometheus → Alertmanager → rollbackd → undo → Slack.

The exporter's series carries kube-state-metrics' ``statefulset`` label, so the
alert Prometheus raises names the StatefulSet; rollbackd undoes it over its
ControllerRevisions, the StatefulSet controller replaces the pods (KWOK makes
them Ready), and Slack's message names the StatefulSet. Prints the time from
breach to every pod Ready on the old revision.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.clock import SystemClock
from daemon.config import load_settings
from tests.daemon_process import token_config
from tests.e2e.test_alert_to_rollback import INGEST_TOKEN, READ_TOKEN, SLACK_TOKEN, _slack_text, slack
from tests.fakes.slack_server import FakeSlack
from tests.fixtures import prometheus_rules, rules_file
from tests.stack.exporter import Exporter
from tests.stack.kube import KubeCluster
from tests.stack.prometheus import Alertmanager, AlertmanagerTarget, Prometheus, WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["slack"]  # the Deployment e2e test's fake Slack, shared
REPLICAS = 2


def _statefulset(kube: KubeCluster, ns: str, image: str) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}], "terminationGracePeriodSeconds": 0},
            },
        },
    }
    kube.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps(sts))
    kube.kubectl("-n", ns, "rollout", "status", "statefulset/web", "--timeout=120s", timeout=180)


def _revision_name(kube: KubeCluster, ns: str, image: str) -> str:
    """The ControllerRevision recording ``image``: StatefulSet pods carry its name as controller-revision-hash."""
    revisions: Any = kube.kubectl_json("-n", ns, "get", "controllerrevisions", "-l", "app=web")
    for rev in revisions["items"]:
        if rev["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == image:
            return str(rev["metadata"]["name"])
    raise AssertionError(f"no ControllerRevision with {image}")


def _pods_ready_on(kube: KubeCluster, ns: str, revision: str) -> bool:
    pods: Any = kube.kubectl_json("-n", ns, "get", "pods", "-l", "app=web")
    good = [
        p for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
        and p["metadata"]["labels"].get("controller-revision-hash") == revision
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]  # fmt: skip
    return len(good) == REPLICAS


async def test_metric_breach_on_a_statefulset_rolls_it_back(
    kube: KubeCluster,
    namespace: str,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    exporter: Exporter,
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alertname = f"E2EStsErrorRate{uuid.uuid4().hex[:6]}"
    for version in ("v1", "v2"):
        await asyncio.to_thread(_statefulset, kube, namespace, f"registry.local/web:{version}")
    v1 = await asyncio.to_thread(_revision_name, kube, namespace, "registry.local/web:v1")

    rules = rules_file("e2e-error-rate", tmp_path / "rules", alertname=alertname)
    monkeypatch.setenv("E2E_SLACK_TOKEN", SLACK_TOKEN)
    tokens = [token_config("alertmanager", INGEST_TOKEN, ["ingest"]), token_config("reader", READ_TOKEN, ["read"])]
    settings = load_settings(
        None,
        http={"host": "127.0.0.1", "port": 0, "tokens": tokens},
        store={"url": f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"},
        rules={"paths": [str(rules)], "watch": False},
        kubernetes={"kubeconfig": str(kube.kubeconfig), "rollout_timeout_s": 120},
        slack={"enabled": True, "token": {"env": "E2E_SLACK_TOKEN"}, "base_url": slack.base_url,
               "default_channel": "#incidents"},
    )  # fmt: skip
    labels = {"namespace": namespace, "statefulset": "web"}

    async with Daemon(settings, clock=SystemClock()) as daemon:
        base = f"http://127.0.0.1:{daemon.port}"
        exporter.set("http_error_ratio", 0.0, labels=labels)
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
        breach = time.monotonic()
        exporter.set("http_error_ratio", 0.2, labels=labels)

        while time.monotonic() < breach + 150:
            if await asyncio.to_thread(_pods_ready_on, kube, namespace, v1):
                break
            await asyncio.sleep(0.2)
        print(f"\ne2e: metric breach -> StatefulSet rolled back, pods Ready in {time.monotonic() - breach:.2f}s")
        assert await asyncio.to_thread(_pods_ready_on, kube, namespace, v1), "pods not Ready on revision 1"
        sts: Any = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "statefulset", "web")
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/web:v1"

        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as api:
            [incident] = (await api.get("/api/v1/incidents")).json()["incidents"]
        assert incident["decision"]["targets"] == [f"statefulset/{namespace}/web"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "revision 1" not in _slack_text(slack):
            await asyncio.sleep(0.2)
        text = _slack_text(slack)
        assert f"statefulset/{namespace}/web" in text, text
        assert "revision 2" in text, text
        assert "revision 1" in text, text
        prometheus.reset()
