"""rollbackd's undo against the real ``kubectl rollout undo`` on identical Deployments.

Two namespaces get the same Deployment with the same three revisions (applied
with ``kubectl apply``, each with its own annotations, so the annotation
handling is exercised). kubectl undoes one, rollbackd the other through its
production path (``RollbackExecutor.execute`` with a break-glass request, as
``rollbackd rollback`` sends it); the resulting pod templates, Deployment
annotations, ReplicaSet revisions and ``metadata.generation`` must be identical — and the refusals must
carry kubectl's messages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.actions.client import build_api_client
from daemon.actions.executor import RollbackExecutor
from daemon.clock import SystemClock
from daemon.config import KubernetesSettings
from daemon.model import RollbackRequest, Target, TargetOutcome, TargetResult
from daemon.store.db import Store
from tests.stack.kube import KubeCluster

pytestmark = pytest.mark.integration


def manifest(name: str, image: str, note: str, replicas: int = 2) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "annotations": {"example.com/note": note}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {
                        "labels": {"app": name, "track": "stable"},
                        "annotations": {"example.com/build": note},
                    },
                    "spec": {"containers": [{"name": name, "image": image, "env": [{"name": "NOTE", "value": note}]}]},
                },
            },
        }
    )


def deploy_revisions(kube: KubeCluster, namespace: str, name: str = "web", count: int = 3) -> None:
    """``count`` revisions v1..vN, each rolled out before the next."""
    for i in range(1, count + 1):
        kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest(name, f"registry.local/{name}:v{i}", f"v{i}"))
        kube.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=180)


def snapshot(kube: KubeCluster, namespace: str, name: str = "web") -> dict[str, Any]:
    """What an undo changes: the template, the annotations, and the revision of each ReplicaSet."""
    dep = kube.kubectl_json("get", "deployment", name, "-n", namespace)
    rs_list = kube.kubectl_json("get", "replicasets", "-n", namespace, "-l", f"app={name}")
    revisions = {
        rs["metadata"]["name"]: rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision")
        for rs in rs_list["items"]  # type: ignore[index]
    }
    meta: Any = dep["metadata"]
    spec: Any = dep["spec"]
    # kubectl apply -n records the namespace in last-applied-configuration: the one expected difference.
    annotations = {k: v.replace(f'"{namespace}"', '"NS"') for k, v in meta["annotations"].items()}
    # The generation too: kubectl neither pauses nor resumes, so a single-target undo must not either.
    generation, paused = meta["generation"], spec.get("paused", False)
    return {
        "template": spec["template"], "annotations": annotations, "replicasets": revisions,
        "generation": generation, "paused": paused,
    }  # fmt: skip


def wait_settled(kube: KubeCluster, namespace: str, name: str = "web") -> None:
    kube.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=180)


@pytest.fixture
def twin(kube: KubeCluster, namespace: str) -> Iterator[str]:
    """A second namespace for the kubectl twin of each Deployment."""
    other = f"{namespace}-k"
    kube.kubectl("create", "namespace", other)
    try:
        yield other
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.fixture
async def executor(kube: KubeCluster, store: Store) -> AsyncIterator[RollbackExecutor]:
    settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=120)
    api = await build_api_client(settings)
    try:
        yield RollbackExecutor(api, store, SystemClock(), settings)
    finally:
        await api.close()


async def rollback(
    executor: RollbackExecutor, namespace: str, to_revision: int = 0, *, dry_run: bool = False
) -> TargetOutcome:
    """``rollbackd rollback NS/web [--to-revision N]``: a break-glass request for one Deployment."""
    request = RollbackRequest(
        incident_id=f"undo-{namespace}-{to_revision}-{dry_run}",
        targets=(Target(namespace, "web"),),
        reason="differential test against kubectl",
        automatic=False,
        to_revision=to_revision or None,
        dry_run=dry_run,
    )
    [outcome] = (await executor.execute(request)).targets
    return outcome


def kubectl_undo(kube: KubeCluster, namespace: str, *extra: str) -> tuple[int, str]:
    """Exit code and the last line kubectl printed (after its kubectl-apply warning, if any)."""
    proc = kube.kubectl("rollout", "undo", "deployment/web", "-n", namespace, *extra, check=False)
    text = proc.stdout if proc.returncode == 0 else proc.stderr
    return proc.returncode, text.strip().splitlines()[-1]


@pytest.mark.parametrize("to_revision", [0, 1], ids=["previous", "revision-1"])
async def test_undo_matches_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor, to_revision: int
) -> None:
    deploy_revisions(kube, namespace)
    deploy_revisions(kube, twin)
    assert snapshot(kube, namespace)["replicasets"] == snapshot(kube, twin)["replicasets"]

    extra = [f"--to-revision={to_revision}"] if to_revision else []
    code, out = kubectl_undo(kube, twin, *extra)
    assert code == 0, out
    with capture_logs() as logs:
        outcome = await rollback(executor, namespace, to_revision)
    assert outcome.result is TargetResult.ROLLED_BACK, outcome.detail
    assert (outcome.from_revision, outcome.to_revision) == (3, to_revision or 2)
    [warned] = [e for e in logs if e["event"] == "rollback.kubectl_apply_warning"]
    assert warned["warning"].startswith("resource deployments/web was previously managed with 'kubectl apply'.")
    wait_settled(kube, namespace)
    wait_settled(kube, twin)

    ours, theirs = snapshot(kube, namespace), snapshot(kube, twin)
    assert ours == theirs
    assert ours["annotations"]["deployment.kubernetes.io/revision"] == "4"
    restored = "v2" if to_revision == 0 else "v1"
    assert ours["annotations"]["example.com/note"] == restored
    assert ours["template"]["spec"]["containers"][0]["image"] == f"registry.local/web:{restored}"
    assert "pod-template-hash" not in ours["template"]["metadata"]["labels"]


async def _same_error(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor, to_revision: int
) -> tuple[str, str]:
    before = snapshot(kube, namespace)
    code, out = kubectl_undo(kube, twin, *([f"--to-revision={to_revision}"] if to_revision else []))
    assert code != 0
    outcome = await rollback(executor, namespace, to_revision)
    assert outcome.result is TargetResult.REFUSED
    assert snapshot(kube, namespace) == before  # refused means untouched
    return outcome.detail, out


async def test_paused_deployment_refused_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, ns, count=2)
        kube.kubectl("rollout", "pause", "deployment/web", "-n", ns)
    ours, theirs = await _same_error(kube, namespace, twin, executor, 0)
    assert ours.startswith("you cannot rollback a paused deployment")
    assert theirs == f"error: {ours}"


async def test_missing_revision_refused_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, ns, count=2)
    ours, theirs = await _same_error(kube, namespace, twin, executor, 7)
    assert ours == "unable to find specified revision 7 in history"
    assert theirs == f"error: {ours}"


async def test_no_history_refused_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, ns, count=1)
    ours, theirs = await _same_error(kube, namespace, twin, executor, 0)
    assert ours == 'no rollout history found for deployment "web"'
    assert theirs == f"error: {ours}"


async def test_current_revision_is_skipped_like_kubectl(
    kube: KubeCluster, namespace: str, twin: str, executor: RollbackExecutor
) -> None:
    for ns in (namespace, twin):
        deploy_revisions(kube, ns, count=2)
    before = snapshot(kube, namespace)
    code, out = kubectl_undo(kube, twin, "--to-revision=2")
    outcome = await rollback(executor, namespace, 2)
    assert code == 0
    assert outcome.result is TargetResult.ALREADY_DONE
    assert out == f"deployment.apps/web {outcome.detail}"
    assert outcome.detail == "skipped rollback (current template already matches revision 2)"
    assert snapshot(kube, namespace) == before


async def test_server_side_dry_run_changes_nothing(
    kube: KubeCluster, namespace: str, executor: RollbackExecutor
) -> None:
    deploy_revisions(kube, namespace, count=2)
    before = snapshot(kube, namespace)
    generation = kube.kubectl_json("get", "deployment", "web", "-n", namespace)["metadata"]
    outcome = await rollback(executor, namespace, dry_run=True)
    assert (outcome.result, outcome.to_revision) == (TargetResult.DRY_RUN, 1)
    after = kube.kubectl_json("get", "deployment", "web", "-n", namespace)["metadata"]
    assert snapshot(kube, namespace) == before
    assert after["generation"] == generation["generation"]  # type: ignore[index]
