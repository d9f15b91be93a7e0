"""The rollback executor on the real cluster: groups, dry run, budget, loop breaker, GitOps, crash safety.

Deployments get real revisions from the real controllers (KWOK makes the pods
Ready); the executor's intents live in the test's store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.actions.client import KubeApi, KubeApiError, api_client_for_token, build_api_client
from daemon.actions.executor import RollbackExecutor
from daemon.actions.intents import IntentStore
from daemon.actions.leader import LeaderElector
from daemon.clock import SystemClock
from daemon.config import KubernetesSettings, LeaderElectionSettings
from daemon.model import RollbackRequest, Target, TargetResult, VerifySpec
from daemon.store.db import Store
from tests.integration.test_actions_undo import deploy_revisions, manifest
from tests.stack.base import REPO
from tests.stack.kube import KubeCluster

pytestmark = pytest.mark.integration


def settings(kube: KubeCluster, **overrides: Any) -> KubernetesSettings:
    return KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=120, **overrides)


@pytest.fixture
async def admin_api(kube: KubeCluster) -> AsyncIterator[Any]:
    api = await build_api_client(settings(kube))
    try:
        yield api
    finally:
        await api.close()


def state(kube: KubeCluster, namespace: str, name: str = "web") -> dict[str, Any]:
    dep: Any = kube.kubectl_json("get", "deployment", name, "-n", namespace)
    return {
        "revision": int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
        "image": dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "paused": bool(dep["spec"].get("paused")),
        "generation": dep["metadata"]["generation"],
    }


def request(namespace: str, *names: str, incident: str = "inc1", **kw: Any) -> RollbackRequest:
    return RollbackRequest(
        incident_id=incident, targets=tuple(Target(namespace, n) for n in names), reason="test", **kw
    )


async def test_group_rolls_back_together_and_reports_per_target(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    names = ("api-gateway", "blockchain-validator", "ai-inference")
    for name in names:
        deploy_revisions(kube, namespace, name, count=2)
    executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube))

    outcome = await executor.execute(request(namespace, *names, "missing"))

    by_name = {o.target.name: o for o in outcome.targets}
    for name in names:
        assert by_name[name].result is TargetResult.ROLLED_BACK, by_name[name]
        assert (by_name[name].from_revision, by_name[name].to_revision) == (2, 1)
        assert state(kube, namespace, name) | {"generation": 0} == {
            "revision": 3,
            "image": f"registry.local/{name}:v1",
            "paused": False,
            "generation": 0,
        }
    assert by_name["missing"].result is TargetResult.FAILED
    assert "not found" in by_name["missing"].detail
    assert not outcome.ok


async def test_dry_run_changes_nothing(kube: KubeCluster, namespace: str, store: Store, admin_api: Any) -> None:
    deploy_revisions(kube, namespace, count=2)
    before = state(kube, namespace)
    executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube), dry_run=True)

    outcome = await executor.execute(request(namespace, "web"))

    assert outcome.targets[0].result is TargetResult.DRY_RUN
    assert "revision 2 to revision 1" in outcome.targets[0].detail
    assert state(kube, namespace) == before
    # Nothing was spent: the real run for the same incident still happens.
    real = RollbackExecutor(admin_api, store, SystemClock(), settings(kube))
    assert (await real.execute(request(namespace, "web"))).targets[0].result is TargetResult.ROLLED_BACK


async def test_budget_refuses_third_rollback_in_window(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube, budget_max_rollbacks=2))
    deploy_revisions(kube, namespace, count=2)
    results = []
    for i, image in enumerate(("v3", "v4", None), start=1):
        results.append((await executor.execute(request(namespace, "web", incident=f"inc{i}"))).targets[0])
        if image:  # a fresh deploy, so the loop breaker has nothing to say
            kube.kubectl(
                "apply", "-n", namespace, "-f", "-", stdin=manifest("web", f"registry.local/web:{image}", image)
            )
            kube.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s", timeout=180)
    assert [r.result for r in results] == [TargetResult.ROLLED_BACK, TargetResult.ROLLED_BACK, TargetResult.REFUSED]
    assert "rollback budget spent" in results[2].detail
    assert state(kube, namespace)["image"] == "registry.local/web:v4"  # the refused one changed nothing


async def test_loop_breaker_refuses_rolling_back_a_rollback(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    deploy_revisions(kube, namespace, count=3)
    executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube))
    first = await executor.execute(request(namespace, "web", incident="inc1"))
    assert first.targets[0].result is TargetResult.ROLLED_BACK
    second = await executor.execute(request(namespace, "web", incident="inc2"))
    assert second.targets[0].result is TargetResult.REFUSED
    assert "produced by a rollback" in second.targets[0].detail
    # A human may still decide (automatic=False), and kubectl's "previous" is the bad v3.
    manual = await executor.execute(request(namespace, "web", incident="inc3", automatic=False, to_revision=1))
    assert manual.targets[0].result is TargetResult.ROLLED_BACK
    assert state(kube, namespace)["image"] == "registry.local/web:v1"


async def test_gitops_managed_deployment_is_refused(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    deploy_revisions(kube, namespace, count=2)
    kube.kubectl("label", "deployment/web", "-n", namespace, "argocd.argoproj.io/instance=shop")
    before = state(kube, namespace)
    executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube))
    outcome = await executor.execute(request(namespace, "web"))
    assert outcome.targets[0].result is TargetResult.REFUSED
    assert "Argo CD application 'shop'" in outcome.targets[0].detail
    assert state(kube, namespace) == before


class Crash(BaseException):
    """Stands for the process dying: nothing below the raise runs, no cleanup."""


async def test_restart_after_patch_performs_exactly_one_undo(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    deploy_revisions(kube, namespace, count=2)
    before = state(kube, namespace)
    req = request(namespace, "web")

    async def die_after_patch(_key: str, _target: Target, step: str) -> None:
        if step == "patched":
            raise Crash

    doomed = RollbackExecutor(admin_api, store, SystemClock(), settings(kube), progress=die_after_patch)
    with pytest.raises(Crash):
        await doomed.execute(req)
    crashed = state(kube, namespace)
    assert crashed["paused"] is False  # one target: no pause, as kubectl does it
    assert crashed["image"] == "registry.local/web:v1"

    restarted = RollbackExecutor(admin_api, store, SystemClock(), settings(kube))
    reconciled = await restarted.reconcile()
    assert [(r.before, r.after) for r in reconciled] == [("planned", "applied")]
    assert "resumed" not in reconciled[0].detail

    again = await restarted.execute(req)
    assert again.targets[0].result is TargetResult.ALREADY_DONE
    once_more = await restarted.execute(req)
    assert once_more.targets[0].result is TargetResult.ALREADY_DONE
    after = state(kube, namespace)
    assert after["revision"] == before["revision"] + 1
    assert after["image"] == "registry.local/web:v1"
    assert after["paused"] is False


async def test_restart_before_patch_marks_interrupted_and_changes_nothing(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    """A group pauses its Deployments first; a crash right after the pauses leaves them paused, unchanged."""
    names = ("web", "api")
    for name in names:
        deploy_revisions(kube, namespace, name, count=2)
    before = {name: state(kube, namespace, name) for name in names}
    paused = asyncio.Event()

    async def die_after_pause(_key: str, target: Target, step: str) -> None:
        if step == "paused" and target.name == "web":
            raise Crash
        if step == "paused":
            paused.set()

    doomed = RollbackExecutor(admin_api, store, SystemClock(), settings(kube), progress=die_after_pause)
    with pytest.raises(Crash):
        await doomed.execute(request(namespace, *names))
    await asyncio.wait_for(paused.wait(), 30)  # the other pause, already sent when the process "died"
    assert all(state(kube, namespace, name)["paused"] for name in names)
    reconciled = await RollbackExecutor(admin_api, store, SystemClock(), settings(kube)).reconcile()
    assert sorted((r.target.name, r.before, r.after) for r in reconciled) == [
        ("api", "planned", "interrupted"), ("web", "planned", "interrupted"),
    ]  # fmt: skip
    assert all("resumed the Deployment we had paused" in r.detail for r in reconciled)
    for name in names:
        after = state(kube, namespace, name)
        assert after["paused"] is False
        assert (after["revision"], after["image"]) == (before[name]["revision"], before[name]["image"])


def rbac_for(namespace: str, suffix: str) -> str:
    """deploy/base/rbac.yaml with the ServiceAccount and Role moved to ``namespace``."""
    text = (REPO / "deploy" / "base" / "rbac.yaml").read_text()
    text = text.replace("namespace: rollbackd", f"namespace: {namespace}")
    # Cluster-scoped names must not collide between test runs.
    return text.replace("name: rollbackd\n  labels", f"name: rollbackd-{suffix}\n  labels").replace(
        "kind: ClusterRole\n  name: rollbackd", f"kind: ClusterRole\n  name: rollbackd-{suffix}"
    )


async def test_executor_under_the_service_account(kube: KubeCluster, namespace: str, store: Store) -> None:
    kube.kubectl("apply", "-f", "-", stdin=rbac_for(namespace, namespace))
    try:
        token = kube.kubectl("create", "token", "rollbackd", "-n", namespace).stdout.strip()
        deploy_revisions(kube, namespace, count=2)
        api = api_client_for_token(kube.server, token, kube.pki / "ca.crt")
        try:
            executor = RollbackExecutor(api, store, SystemClock(), settings(kube))
            outcome = await executor.execute(request(namespace, "web"))
            assert outcome.targets[0].result is TargetResult.ROLLED_BACK, outcome
            assert state(kube, namespace)["image"] == "registry.local/web:v1"

            kube_api = KubeApi(api, 10.0)
            for method, path in (
                ("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/web"),
                ("GET", f"/api/v1/namespaces/{namespace}/secrets"),
                ("GET", "/api/v1/namespaces/default/pods"),
            ):
                with pytest.raises(KubeApiError) as err:
                    await kube_api.request(method, path, f"{method} {path}")
                assert err.value.status == 403
                assert err.value.reason == "k8s_forbidden"

            lease = LeaderElectionSettings(
                enabled=True, namespace=namespace, lease_duration_s=4, renew_deadline_s=3, retry_period_s=1
            )
            elector = LeaderElector(api, lease, "sa-replica")
            task = asyncio.create_task(elector.run())
            try:
                await asyncio.wait_for(elector.elected.wait(), 10)
            finally:
                await elector.stop()
                await task
            holder = json.loads(kube.kubectl("get", "lease", "rollbackd-leader", "-n", namespace, "-o", "json").stdout)
            assert holder["spec"].get("holderIdentity") is None  # released on stop
        finally:
            await api.close()
    finally:
        kube.kubectl("delete", "clusterrole,clusterrolebinding", f"rollbackd-{namespace}", check=False)


class Metric:
    """The MetricQuery protocol with a fixed answer (Prometheus itself is exercised by sources' tests)."""

    def __init__(self, value: float | None) -> None:
        self.answer = value

    async def value(self, promql: str) -> float | None:
        return self.answer


@pytest.mark.parametrize(("value", "verified"), [(0.01, True), (0.9, False)], ids=["recovered", "still-bad"])
async def test_verification_decides_the_outcome(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any, value: float, verified: bool
) -> None:
    deploy_revisions(kube, namespace, count=2)
    executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube), metric_query=Metric(value))
    spec = VerifySpec(promql='error_rate{service="web"}', threshold=0.05, within_s=2)

    outcome = await executor.execute(request(namespace, "web", verify=spec))

    assert outcome.targets[0].result is TargetResult.ROLLED_BACK
    assert outcome.verified is verified
    assert outcome.ok is verified
    intent = await IntentStore(store).get(f"inc1:{namespace}/web")
    assert intent is not None
    assert intent.state == ("verified" if verified else "failed")
    if not verified:
        assert "= 0.9, expected < 0.05 within 2s" in outcome.verify_detail
