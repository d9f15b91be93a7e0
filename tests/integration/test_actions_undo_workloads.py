"""rollbackd's StatefulSet and DaemonSet undo against the real ``kubectl rollout undo``.

Two namespaces get the same workload with the same revisions (``kubectl
apply``; the real StatefulSet and DaemonSet controllers write the
ControllerRevisions, KWOK makes the pods Ready). kubectl undoes one,
rollbackd the other through its production path (``RollbackExecutor.execute``
with the break-glass request ``rollbackd rollback KIND/NS/web`` sends); the
templates, the ControllerRevisions' numbers, ``metadata.generation`` and the
pods' revisions must be identical, and refusals must carry kubectl's messages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.actions.client import KubeApi, KubeApiError, api_client_for_token, build_api_client
from daemon.actions.executor import RollbackExecutor
from daemon.clock import SystemClock
from daemon.config import KubernetesSettings
from daemon.model import RollbackRequest, Target, TargetOutcome, TargetResult
from daemon.store.db import Store
from daemon.target import WorkloadKind
from tests.integration.test_actions_executor import rbac_for
from tests.integration.test_actions_undo import deploy_revisions as deployment_revisions
from tests.integration.test_actions_undo import executor, twin
from tests.stack.kube import KubeCluster

pytestmark = pytest.mark.integration
__all__ = ["executor", "twin"]  # the Deployment test's fixtures, shared

KINDS = [WorkloadKind.STATEFULSET, WorkloadKind.DAEMONSET]


def manifest(kind: WorkloadKind, image: str, note: str, *, partition: int | None = None) -> str:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": {"example.com/build": note}},
            "spec": {
                "containers": [{"name": "web", "image": image, "env": [{"name": "NOTE", "value": note}]}],
                "terminationGracePeriodSeconds": 0,
            },
        },
    }
    if kind is WorkloadKind.STATEFULSET:
        spec |= {"replicas": 3, "serviceName": "web", "podManagementPolicy": "Parallel"}
        if partition is not None:
            spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": kind.api_kind,
            "metadata": {"name": "web", "annotations": {"example.com/note": note}},
            "spec": spec,
        }
    )


def wait_settled(kube: KubeCluster, kind: WorkloadKind, namespace: str) -> None:
    kube.kubectl("rollout", "status", f"{kind.value}/web", "-n", namespace, "--timeout=120s", timeout=180)


def deploy_revisions(kube: KubeCluster, kind: WorkloadKind, namespace: str, count: int = 3, **kw: Any) -> None:
    """``count`` revisions v1..vN, each rolled out before the next."""
    for i in range(1, count + 1):
        kube.kubectl(
            "apply", "-n", namespace, "-f", "-", stdin=manifest(kind, f"registry.local/web:v{i}", f"v{i}", **kw)
        )
        wait_settled(kube, kind, namespace)


def snapshot(kube: KubeCluster, kind: WorkloadKind, namespace: str) -> dict[str, Any]:
    """What an undo changes: the template, the generation, and the number of each ControllerRevision."""
    obj: Any = kube.kubectl_json("get", kind.value, "web", "-n", namespace)
    revisions: Any = kube.kubectl_json("get", "controllerrevisions", "-n", namespace, "-l", "app=web")
    annotations = {k: v.replace(f'"{namespace}"', '"NS"') for k, v in obj["metadata"]["annotations"].items()}
    return {
        "template": obj["spec"]["template"],
        "generation": obj["metadata"]["generation"],
        "annotations": annotations,
        "revisions": {r["metadata"]["name"]: r["revision"] for r in revisions["items"]},
    }


def pod_revisions(kube: KubeCluster, namespace: str) -> list[tuple[str, str]]:
    """(ordinal, revision hash) of each live pod; a DaemonSet's pods have random names, so "pod" for each."""
    pods: Any = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app=web")
    out = []
    for pod in pods["items"]:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        suffix = meta["name"].rsplit("-", 1)[-1]
        out.append((suffix if suffix.isdigit() else "pod", meta["labels"].get("controller-revision-hash", "")))
    return sorted(out)


async def rollback(
    executor: RollbackExecutor, kind: WorkloadKind, namespace: str, to_revision: int = 0
) -> TargetOutcome:
    """``rollbackd rollback KIND/NS/web [--to-revision N]``: a break-glass request for one workload."""
    request = RollbackRequest(
        incident_id=f"undo-{kind.value}-{namespace}-{to_revision}",
        targets=(Target(namespace, "web", kind),),
        reason="differential test against kubectl",
        automatic=False,
        to_revision=to_revision or None,
    )
    [outcome] = (await executor.execute(request)).targets
    return outcome


def kubectl_undo(kube: KubeCluster, kind: WorkloadKind, namespace: str, *extra: str) -> tuple[int, str]:
    proc = kube.kubectl("rollout", "undo", f"{kind.value}/web", "-n", namespace, *extra, check=False)
    text = proc.stdout if proc.returncode == 0 else proc.stderr
    return proc.returncode, text.strip().splitlines()[-1]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("to_revision", [0, 1], ids=["previous", "revision-1"])
async def test_undo_matches_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor, kind: WorkloadKind, to_revision: int
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, kind, ns)
    assert snapshot(kube, kind, namespace) == snapshot(kube, kind, twin)

    code, out = kubectl_undo(kube, kind, twin, *([f"--to-revision={to_revision}"] if to_revision else []))
    assert (code, out) == (0, f"{kind.value}.apps/web rolled back")
    outcome = await rollback(executor, kind, namespace, to_revision)
    assert outcome.result is TargetResult.ROLLED_BACK, outcome.detail
    assert (outcome.from_revision, outcome.to_revision) == (3, to_revision or 2)
    wait_settled(kube, kind, twin)

    ours, theirs = snapshot(kube, kind, namespace), snapshot(kube, kind, twin)
    assert ours == theirs
    restored = "v2" if to_revision == 0 else "v1"
    assert ours["template"]["spec"]["containers"][0]["image"] == f"registry.local/web:{restored}"
    assert sorted(ours["revisions"].values()) == ([1, 3, 4] if to_revision == 0 else [2, 3, 4])
    assert pod_revisions(kube, namespace) == pod_revisions(kube, twin)


async def _same_refusal(
    kube: KubeCluster, kind: WorkloadKind, namespace: str, twin: str, executor: RollbackExecutor, to_revision: int
) -> tuple[str, str]:
    before = snapshot(kube, kind, namespace)
    code, out = kubectl_undo(kube, kind, twin, *([f"--to-revision={to_revision}"] if to_revision else []))
    assert code != 0
    outcome = await rollback(executor, kind, namespace, to_revision)
    assert outcome.result is TargetResult.REFUSED
    assert snapshot(kube, kind, namespace) == before  # refused means untouched
    return outcome.detail, out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_missing_revision_refused_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor, kind: WorkloadKind
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, kind, ns)
    ours, theirs = await _same_refusal(kube, kind, namespace, twin, executor, 7)
    assert ours == "unable to find specified revision 7 in history"
    assert theirs == f"error: {ours}"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_one_revision_only_refused_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor, kind: WorkloadKind
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, kind, ns, count=1)
    ours, theirs = await _same_refusal(kube, kind, namespace, twin, executor, 0)
    assert ours == "no last revision to roll back to"
    assert theirs == f"error: {ours}"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_current_revision_is_skipped_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor, kind: WorkloadKind
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, kind, ns)
    before = snapshot(kube, kind, namespace)
    code, out = kubectl_undo(kube, kind, twin, "--to-revision=3")
    outcome = await rollback(executor, kind, namespace, 3)
    assert code == 0
    assert outcome.result is TargetResult.ALREADY_DONE
    assert outcome.detail == "skipped rollback (current template already matches revision 3)"
    assert out == f"{kind.value}.apps/web {outcome.detail}"
    assert snapshot(kube, kind, namespace) == before


async def test_partitioned_statefulset_matches_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor
) -> None:
    """Only ordinals ≥ partition ever took v2 and v3; the undo restores the template, they return to v2."""
    sts = WorkloadKind.STATEFULSET
    for ns in (namespace, twin):
        deploy_revisions(kube, sts, ns, partition=2)
    before = dict(pod_revisions(kube, namespace))
    assert len(set(before.values())) == 2  # ordinals 0 and 1 on v1, ordinal 2 on v3
    code, out = kubectl_undo(kube, sts, twin)
    assert (code, out) == (0, "statefulset.apps/web rolled back")
    outcome = await rollback(executor, sts, namespace)
    assert outcome.result is TargetResult.ROLLED_BACK, outcome.detail
    assert outcome.detail.startswith("partitioned roll out complete: 1 new pods have been updated")
    wait_settled(kube, sts, twin)
    assert snapshot(kube, sts, namespace) == snapshot(kube, sts, twin)
    after = dict(pod_revisions(kube, namespace))
    assert after == dict(pod_revisions(kube, twin))
    assert after["0"] == before["0"]  # below the partition: untouched, as kubectl leaves it
    assert after["2"] != before["2"]


async def test_a_group_of_mixed_kinds_pauses_only_its_deployment(
    kube: KubeCluster, namespace: str, store: Store
) -> None:
    """seed 8.2 for a group: the Deployment is paused, undone, resumed; the StatefulSet (no pause) undone."""
    sts = WorkloadKind.STATEFULSET
    deploy_revisions(kube, sts, namespace, count=2)
    deployment_revisions(kube, namespace, count=2)
    dep_generation = kube.kubectl_json("get", "deployment", "web", "-n", namespace)["metadata"]["generation"]  # type: ignore[index]
    steps: list[tuple[Target, str]] = []

    async def progress(key: str, target: Target, step: str) -> None:
        steps.append((target, step))

    settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=120)
    api = await build_api_client(settings)
    request = RollbackRequest(
        incident_id=f"group-{namespace}",
        targets=(Target(namespace, "web"), Target(namespace, "web", sts)),
        reason="a release of two workloads",
        automatic=False,
    )
    try:
        outcome = await RollbackExecutor(api, store, SystemClock(), settings, progress=progress).execute(request)
    finally:
        await api.close()
    assert [(o.target.kind, o.result, o.to_revision) for o in outcome.targets] == [
        (WorkloadKind.DEPLOYMENT, TargetResult.ROLLED_BACK, 1),
        (sts, TargetResult.ROLLED_BACK, 1),
    ]
    dep: Any = kube.kubectl_json("get", "deployment", "web", "-n", namespace)
    assert dep["metadata"]["generation"] == dep_generation + 3  # pause, undo, resume
    assert dep["spec"].get("paused", False) is False
    assert [s for t, s in steps if t.kind is sts] == ["planned", "patched", "ready"]
    assert [s for t, s in steps if t.kind is WorkloadKind.DEPLOYMENT] == [
        "planned", "paused", "patched", "resumed", "ready",
    ]  # fmt: skip
    obj: Any = kube.kubectl_json("get", "statefulset", "web", "-n", namespace)
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/web:v1"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_undo_under_the_shipped_service_account(
    kube: KubeCluster, namespace: str, store: Store, kind: WorkloadKind
) -> None:
    """deploy/base/rbac.yaml grants exactly what the undo of each kind needs, and no delete."""
    suffix = f"{namespace}-{kind.value}"
    kube.kubectl("apply", "-f", "-", stdin=rbac_for(namespace, suffix))
    try:
        token = kube.kubectl("create", "token", "rollbackd", "-n", namespace).stdout.strip()
        deploy_revisions(kube, kind, namespace, count=2)
        api = api_client_for_token(kube.server, token, kube.pki / "ca.crt")
        try:
            settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=120)
            outcome = await RollbackExecutor(api, store, SystemClock(), settings).execute(
                RollbackRequest(f"sa-{kind.value}", (Target(namespace, "web", kind),), "rbac", automatic=False)
            )
            assert outcome.targets[0].result is TargetResult.ROLLED_BACK, outcome
            for method, path in (
                ("DELETE", f"/apis/apps/v1/namespaces/{namespace}/{kind.resource}/web"),
                ("DELETE", f"/api/v1/namespaces/{namespace}/pods/web-0"),
                ("GET", f"/api/v1/namespaces/{namespace}/pods"),
            ):
                with pytest.raises(KubeApiError) as err:
                    await KubeApi(api, 10.0).request(method, path, f"{method} {path}")
                assert err.value.status == 403
        finally:
            await api.close()
    finally:
        kube.kubectl("delete", "clusterrole,clusterrolebinding", f"rollbackd-{suffix}", check=False)
