"""The Kubernetes test stack does what rollbackd relies on: rollouts, revisions and rollbacks.

Real controllers write ReplicaSets with revision annotations; KWOK makes the pods
Running/Ready on the fake node.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.stack.kube import NODE_NAME, KubeCluster

pytestmark = pytest.mark.integration

ROLLOUT_TIMEOUT = "--timeout=120s"


def _get(kube: KubeCluster, namespace: str, *what: str) -> Any:
    return json.loads(kube.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)


def _live_pods(kube: KubeCluster, namespace: str) -> list[Any]:
    pods = _get(kube, namespace, "pods", "-l", "app=web")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _pod_ready(pod: Any) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def test_deployment_rollout_and_undo(kube: KubeCluster, namespace: str) -> None:
    timings: dict[str, float] = {}

    def step(name: str, *args: str) -> None:
        t0 = time.monotonic()
        kube.kubectl(*args, "-n", namespace, timeout=180)
        timings[name] = time.monotonic() - t0

    step("create", "create", "deployment", "web", "--image=registry.local/web:v1", "--replicas=2")
    step("rollout v1", "rollout", "status", "deployment/web", ROLLOUT_TIMEOUT)
    step("set image", "set", "image", "deployment/web", "web=registry.local/web:v2")
    step("rollout v2", "rollout", "status", "deployment/web", ROLLOUT_TIMEOUT)
    step("undo", "rollout", "undo", "deployment/web")
    step("rollout undo", "rollout", "status", "deployment/web", ROLLOUT_TIMEOUT)

    deploy = _get(kube, namespace, "deployment", "web")
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["registry.local/web:v1"]
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert deploy["status"]["readyReplicas"] == 2

    # Pods of the scaled-down v2 ReplicaSet are deleted by KWOK's pod-delete stage; wait for them to go.
    t0 = time.monotonic()
    deadline = t0 + 60
    pods = _live_pods(kube, namespace)
    while time.monotonic() < deadline:
        pods = _live_pods(kube, namespace)
        images = {c["image"] for p in pods for c in p["spec"]["containers"]}
        if len(pods) == 2 and all(_pod_ready(p) for p in pods) and images == {"registry.local/web:v1"}:
            break
        time.sleep(0.5)
    timings["pods settled"] = time.monotonic() - t0
    summary = [(p["metadata"]["name"], p["status"].get("phase"), p["spec"].get("nodeName")) for p in pods]
    assert len(pods) == 2, summary
    assert all(_pod_ready(p) for p in pods), summary
    assert all(p["spec"]["nodeName"] == NODE_NAME for p in pods), summary
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {"registry.local/web:v1"}

    replicasets = _get(kube, namespace, "replicasets")["items"]
    revisions = sorted(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for rs in replicasets)
    assert revisions == ["2", "3"], revisions  # the v1 ReplicaSet moved from revision 1 to 3

    print("\nkube rollout timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
