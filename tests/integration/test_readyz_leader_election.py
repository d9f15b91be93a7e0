"""/readyz with leader election on: leader and standby both become Ready under the shipped probe.

Two ``rollbackd run`` processes share one PostgreSQL database and campaign on
the test cluster's Lease with the shipped durations (deploy/base/config). The
readiness probe is read from deploy/base/deployment.yaml and replayed as the
kubelet runs it once the startup probe (``/healthz``) passed: a GET of its
path every ``periodSeconds`` with ``timeoutSeconds``; each replica must answer
200 within ``failureThreshold`` probes, and no probe may ever see a 500. The
standby is Ready because it does a standby's job: it accepts webhooks into the
shared inbox (checked), while the leader acts.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.stack.base import REPO
from tests.stack.kube import KubeCluster
from tests.stack.postgres import Postgres
from tests.webhooks import probe_webhook

pytestmark = pytest.mark.integration

DEPLOYMENT = REPO / "deploy" / "base" / "deployment.yaml"
SHIPPED_CONFIG = REPO / "deploy" / "base" / "config" / "rollbackd.yaml"


def readiness_probe() -> dict[str, Any]:
    """The rollbackd container's readinessProbe, with its named port resolved."""
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "rollbackd")
    probe = dict(container["readinessProbe"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = probe["httpGet"]["port"]
    probe["containerPort"] = ports.get(port, port)
    return probe


def shipped_leader_election() -> dict[str, Any]:
    """The shipped config's ``kubernetes.leader_election`` (15 s lease, 10 s renew deadline, 2 s retry)."""
    return dict(yaml.safe_load(SHIPPED_CONFIG.read_text())["kubernetes"]["leader_election"])


def kubelet_probe(url: str, probe: dict[str, Any]) -> tuple[list[int], float]:
    """Probe as the kubelet does until the first success or ``failureThreshold`` failures.

    The statuses seen and the seconds until the first 200 (inf if none). A timeout counts
    as a failure with status 0.
    """
    path = probe["httpGet"]["path"]
    statuses: list[int] = []
    start = time.monotonic()
    for i in range(int(probe.get("failureThreshold", 3))):
        if i:
            time.sleep(max(0.0, start + i * float(probe.get("periodSeconds", 10)) - time.monotonic()))
        try:
            status = httpx.get(f"{url}{path}", timeout=float(probe.get("timeoutSeconds", 1))).status_code
        except httpx.TimeoutException:
            status = 0
        statuses.append(status)
        if 200 <= status < 400:  # the kubelet's notion of success for httpGet
            return statuses, time.monotonic() - start
    return statuses, float("inf")


def test_leader_and_standby_are_ready_under_the_shipped_probe(
    kube: KubeCluster, namespace: str, postgres: Postgres, tmp_path: Path
) -> None:
    probe = readiness_probe()
    assert probe["containerPort"] == 9797
    assert probe["httpGet"]["path"] == "/readyz"
    election = {**shipped_leader_election(), "enabled": True, "namespace": namespace}
    extra = {"store": {"url": postgres.create_database()}, "kubernetes": {"leader_election": election}}
    replicas = [
        DaemonProcess(tmp_path / name, kubeconfig=kube.kubeconfig, extra=extra, log_level="info", instance=name)
        for name in ("rollbackd-0", "rollbackd-1")
    ]
    try:
        seen: dict[str, tuple[list[int], float]] = {}
        for replica in replicas:
            replica.start()  # returns once /healthz answers: the startup probe has passed
            seen[replica.instance or ""] = kubelet_probe(replica.url, probe)
        budget = (int(probe["failureThreshold"]) - 1) * float(probe["periodSeconds"])
        print({name: (statuses, round(took, 2)) for name, (statuses, took) in seen.items()}, f"budget {budget}s")
        for name, (statuses, took) in seen.items():
            assert 500 not in statuses, f"{name}: /readyz answered 500: {statuses}\n"
            assert took <= budget, f"{name}: not Ready within {budget}s of the probe: {statuses}"
        bodies = [httpx.get(f"{r.url}/readyz", timeout=3).json() for r in replicas]
        assert all(b["status"] == "ready" and b["checks"]["leadership"] == "ok" for b in bodies), bodies
        assert sorted(b["leader"] for b in bodies) == [False, True], bodies  # one leader, one standby
        standby = replicas[[b["leader"] for b in bodies].index(False)]
        resp = httpx.post(
            f"{standby.url}/webhooks/alertmanager",
            content=probe_webhook(namespace, f"web-{uuid.uuid4().hex[:6]}"),
            headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text  # into the shared inbox; the leader handles it
        # Still Ready one probe period later: a standby's readiness does not flap with the Lease.
        time.sleep(float(probe["periodSeconds"]))
        again = [httpx.get(f"{r.url}/readyz", timeout=float(probe["timeoutSeconds"])).status_code for r in replicas]
        assert again == [200, 200], again
    finally:
        for replica in replicas:
            replica.stop()
