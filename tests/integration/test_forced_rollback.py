"""Forced rollback of a stuck StatefulSet on the real cluster, through the daemon's incident path.

An OrderedReady StatefulSet of three replicas moves to a bad revision whose pod template carries
``rollbackd.test/hold-not-ready``: KWOK keeps that pod Running and never Ready
(tests/stack/kwok/), so the controller stops at the highest ordinal, ``web-2``, and waits for it
(kubernetes#67250). An alert naming the StatefulSet opens an incident whose rule rolls it back at
once (``tests/fixtures/rules/forced-rollback.yaml``); the undo restores the template, and:

- with the rule's ``forced_rollback`` (3 s), rollbackd deletes exactly that pod (its UID), the
  controller recreates it on the restored revision, it becomes Ready, and the incident's record,
  the intent and the metric show the deletion;
- without it, no pod is deleted: the rollout times out and the record names the stuck pod;
- under rollbackd's ServiceAccount with the base RBAC only, the forced step is refused (no
  access to pods) and says so; with ``deploy/components/forced-rollback`` it deletes the pod;
- a deletion a crash left open in the intent is finished for its UID only: a pod recreated since
  is not deleted (the API server's UID precondition), and no second pod is chosen.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from daemon.actions.client import api_client_for_token, build_api_client
from daemon.actions.executor import RollbackExecutor
from daemon.actions.intents import IntentStore
from daemon.app import Daemon
from daemon.clock import SystemClock
from daemon.config import KubernetesSettings, load_settings
from daemon.metrics import REGISTRY
from daemon.model import RollbackRequest, Target, TargetOutcome, TargetResult
from daemon.store.db import Store
from daemon.store.tables import RollbackIntentRow
from daemon.target import WorkloadKind
from tests.daemon_process import token_config
from tests.e2e.test_alert_to_rollback import INGEST_TOKEN, READ_TOKEN
from tests.fixtures import rules_file
from tests.integration.test_actions_executor import rbac_for
from tests.stack.base import REPO
from tests.stack.kube import HOLD_NOT_READY, KubeCluster
from tests.waiting import until
from tests.webhooks import firing_alert, webhook_bodies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPLICAS = 3
SETTLED = ("resolved", "failed", "escalated")


def _manifest(image: str, *, hold: bool) -> str:
    labels = {"app": "web", **({HOLD_NOT_READY: "true"} if hold else {})}
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS, "serviceName": "web", "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image}], "terminationGracePeriodSeconds": 0},
            },
        },
    })  # fmt: skip


def _pods(kube: KubeCluster, ns: str) -> dict[str, dict[str, Any]]:
    listed: Any = kube.kubectl_json("-n", ns, "get", "pods", "-l", "app=web")
    return {p["metadata"]["name"]: p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _revision(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"].get("controller-revision-hash", ""))


def _stuck_on_bad_revision(kube: KubeCluster, ns: str) -> tuple[str, str]:
    """v1 everywhere, then the held v2: wait until web-2 is Running on v2 and not Ready; its UID and revision."""
    kube.kubectl("-n", ns, "apply", "-f", "-", stdin=_manifest("registry.local/web:v1", hold=False))
    kube.kubectl("-n", ns, "rollout", "status", "statefulset/web", "--timeout=60s", timeout=90)
    kube.kubectl("-n", ns, "apply", "-f", "-", stdin=_manifest("registry.local/web:v2", hold=True))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sts: Any = kube.kubectl_json("-n", ns, "get", "statefulset", "web")
        bad = sts["status"].get("updateRevision", "")
        pod = _pods(kube, ns).get("web-2")
        if pod and _revision(pod) == bad and pod["status"].get("phase") == "Running" and not _ready(pod):
            return str(pod["metadata"]["uid"]), bad
        time.sleep(0.3)
    raise AssertionError(f"web-2 never got stuck on the bad revision: {_pods(kube, ns)}")


def _fire(base: str, ns: str, *, forced: bool, alertname: str) -> None:
    alert = copy.deepcopy(firing_alert(alertname, ns, "web", 0, uuid.uuid4().hex[:8]))
    labels: Any = alert["labels"]
    del labels["deployment"]
    labels |= {"statefulset": "web", "forced": "yes" if forced else "no"}
    [body] = webhook_bodies([alert], random.Random(1), 1)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    resp = httpx.post(f"{base}/webhooks/alertmanager", content=body, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text


def _settled(base: str) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    listed = httpx.get(f"{base}/api/v1/incidents", headers=headers, timeout=10).json()["incidents"]
    if not listed or listed[0]["state"] not in SETTLED:
        return None
    resp = httpx.get(f"{base}/api/v1/incidents/{listed[0]['id']}", headers=headers, timeout=10)
    return dict(resp.json())


@pytest.fixture
async def store_url(request: pytest.FixtureRequest, tmp_path: Path, store_backend: str) -> AsyncIterator[str]:
    """A fresh store for the daemon to migrate: SQLite in a temp dir, or a new database on the stack's PostgreSQL."""
    if store_backend == "postgres":
        yield await request.getfixturevalue("postgres").new_database()
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"


def _daemon(kube: KubeCluster, store_url: str, rules: Path, rollout_timeout_s: float) -> Daemon:
    tokens = [token_config("alertmanager", INGEST_TOKEN, ["ingest"]), token_config("reader", READ_TOKEN, ["read"])]
    settings = load_settings(
        None,
        http={"host": "127.0.0.1", "port": 0, "tokens": tokens},
        store={"url": store_url},
        rules={"paths": [str(rules)], "watch": False},
        kubernetes={"kubeconfig": str(kube.kubeconfig), "rollout_timeout_s": rollout_timeout_s},
    )
    return Daemon(settings, clock=SystemClock())


async def _intent_forced(store_url: str) -> Any:
    store = Store(store_url)
    try:
        async with store.transaction() as s:
            [row] = (await s.scalars(select(RollbackIntentRow))).all()
            return (row.detail or {}).get("forced")
    finally:
        await store.close()


def _deleted() -> float:
    return REGISTRY.get_sample_value("rollbackd_forced_pod_deletions_total", {"outcome": "deleted"}) or 0.0


async def test_a_stuck_pod_is_deleted_when_the_rule_allows_it(
    kube: KubeCluster, namespace: str, store_url: str, tmp_path: Path
) -> None:
    stuck_uid, bad = await asyncio.to_thread(_stuck_on_bad_revision, kube, namespace)
    alertname = f"Stuck{uuid.uuid4().hex[:6]}"
    rules = rules_file("forced-rollback", tmp_path / "rules", alertname=alertname)
    before = _deleted()
    async with _daemon(kube, store_url, rules, rollout_timeout_s=45) as daemon:
        base = f"http://127.0.0.1:{daemon.port}"
        await asyncio.to_thread(_fire, base, namespace, forced=True, alertname=alertname)
        record = await until("the incident settles", lambda: _settled(base), within=60, every=0.3)

    pods = await asyncio.to_thread(_pods, kube, namespace)
    sts: Any = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "statefulset", "web")
    restored = sts["status"]["updateRevision"]
    assert restored != bad
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/web:v1"
    # Exactly the stuck pod was replaced: a new UID, on the restored revision, Ready.
    assert pods["web-2"]["metadata"]["uid"] != stuck_uid
    assert all(_revision(p) == restored and _ready(p) for p in pods.values()), pods
    assert len(pods) == REPLICAS

    assert record["state"] == "resolved", record
    [action] = record["actions"]
    assert action["result"] == "rolled_back", action
    assert (
        f"forced rollback: deleted pod web-2 (uid {stuck_uid}), not Ready on the bad revision {bad}"
        in (action["detail"])
    )
    # The timeline, and so the notification of the step, says it in its sentence.
    finished = next(t for t in record["timeline"] if t["action"] == "rollback_finished")
    assert f"forced rollback: deleted pod web-2 (uid {stuck_uid})" in finished["detail"]["why"], finished
    forced = await _intent_forced(store_url)
    assert forced["uid"] == stuck_uid
    assert (forced["pod"], forced["state"], forced["revision"]) == ("web-2", "deleted", bad)
    assert _deleted() == before + 1


async def test_without_the_permission_no_pod_is_deleted_and_the_stuck_pod_is_reported(
    kube: KubeCluster, namespace: str, store_url: str, tmp_path: Path
) -> None:
    stuck_uid, bad = await asyncio.to_thread(_stuck_on_bad_revision, kube, namespace)
    alertname = f"Stuck{uuid.uuid4().hex[:6]}"
    rules = rules_file("forced-rollback", tmp_path / "rules", alertname=alertname)
    before = _deleted()
    async with _daemon(kube, store_url, rules, rollout_timeout_s=10) as daemon:
        base = f"http://127.0.0.1:{daemon.port}"
        await asyncio.to_thread(_fire, base, namespace, forced=False, alertname=alertname)
        record = await until("the incident settles", lambda: _settled(base), within=45, every=0.3)

    sts: Any = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "statefulset", "web")
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/web:v1"  # restored
    pod = (await asyncio.to_thread(_pods, kube, namespace))["web-2"]
    assert pod["metadata"]["uid"] == stuck_uid  # not deleted
    assert _revision(pod) == bad
    assert not _ready(pod)

    [action] = record["actions"]
    assert action["result"] == "timed_out", action
    assert f"pod web-2 is not Ready on the bad revision {bad}" in action["detail"], action
    assert "forced rollback is not allowed" in action["detail"]
    finished = next(t for t in record["timeline"] if t["action"] == "rollback_finished")
    assert f"pod web-2 is not Ready on the bad revision {bad}" in finished["detail"]["why"], finished
    assert await _intent_forced(store_url) is None
    assert _deleted() == before


def _component_rbac(namespace: str, suffix: str) -> str:
    """deploy/components/forced-rollback's RBAC, bound to the ServiceAccount in ``namespace``."""
    text = (REPO / "deploy" / "components" / "forced-rollback" / "rbac.yaml").read_text()
    text = text.replace("namespace: rollbackd", f"namespace: {namespace}")
    return text.replace("name: rollbackd-forced-rollback", f"name: rollbackd-forced-rollback-{suffix}")


async def test_the_service_account_needs_the_component_to_delete_the_pod(
    kube: KubeCluster, namespace: str, store: Store
) -> None:
    stuck_uid, _ = await asyncio.to_thread(_stuck_on_bad_revision, kube, namespace)
    kube.kubectl("apply", "-f", "-", stdin=rbac_for(namespace, namespace))
    try:
        token = kube.kubectl("create", "token", "rollbackd", "-n", namespace).stdout.strip()
        api = api_client_for_token(kube.server, token, kube.pki / "ca.crt")
        settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=8)
        req = RollbackRequest(
            incident_id="forced-sa", targets=(Target(namespace, "web", WorkloadKind.STATEFULSET),),
            reason="test", forced_rollback_after_s=2,
        )  # fmt: skip
        try:
            executor = RollbackExecutor(api, store, SystemClock(), settings)
            [refused] = (await executor.execute(req)).targets
            assert refused.result is TargetResult.TIMED_OUT, refused
            assert "forced rollback failed: could not read the StatefulSet's pods" in refused.detail, refused
            assert "forbidden" in refused.detail
            assert _pods(kube, namespace)["web-2"]["metadata"]["uid"] == stuck_uid

            kube.kubectl("apply", "-f", "-", stdin=_component_rbac(namespace, namespace))
            # The same intent again: its undo is applied already, so only the wait and the forced step run.
            settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=30)
            [forced] = (await RollbackExecutor(api, store, SystemClock(), settings).execute(req)).targets
        finally:
            await api.close()
        assert forced.result is TargetResult.ALREADY_DONE, forced
        assert f"forced rollback: deleted pod web-2 (uid {stuck_uid})" in forced.detail, forced
        pods = _pods(kube, namespace)
        assert pods["web-2"]["metadata"]["uid"] != stuck_uid
        assert all(_ready(p) for p in pods.values())
    finally:
        names = (f"rollbackd-{namespace}", f"rollbackd-forced-rollback-{namespace}")
        kube.kubectl("delete", "clusterrole,clusterrolebinding", *names, check=False)


async def test_a_deletion_a_crash_left_open_is_finished_for_its_uid_only(
    kube: KubeCluster, namespace: str, store: Store
) -> None:
    """The intent says ``deleting`` (a crash after it was written): the retry deletes that UID, never another pod."""
    stuck_uid, bad = await asyncio.to_thread(_stuck_on_bad_revision, kube, namespace)
    api = await build_api_client(KubernetesSettings(kubeconfig=kube.kubeconfig))
    target = Target(namespace, "web", WorkloadKind.STATEFULSET)
    req = RollbackRequest(incident_id="forced-crash", targets=(target,), reason="test")
    key = req.idempotency_key(target)
    intents = IntentStore(store)

    async def run(forced_after_s: float | None, timeout_s: float) -> TargetOutcome:
        settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=timeout_s)
        executor = RollbackExecutor(api, store, SystemClock(), settings)
        [outcome] = (await executor.execute(replace(req, forced_rollback_after_s=forced_after_s))).targets
        return outcome

    def left_open(uid: str) -> dict[str, Any]:
        return {"pod": "web-2", "uid": uid, "revision": bad, "after_s": 1.0, "state": "deleting"}

    try:
        assert (await run(None, 4)).result is TargetResult.TIMED_OUT  # the undo is applied, the pod stuck
        # A deletion of a pod that was recreated since: the UID precondition refuses it, and no other is chosen.
        await intents.note(key, SystemClock().now(), forced=left_open("uid-of-a-pod-long-gone"))
        outcome = await run(1.0, 5)
        assert "forced rollback: found already replaced pod web-2 (uid uid-of-a-pod-long-gone)" in outcome.detail
        assert _pods(kube, namespace)["web-2"]["metadata"]["uid"] == stuck_uid
        # The stuck pod's own deletion left open: finished, once.
        await intents.note(key, SystemClock().now(), forced=left_open(stuck_uid))
        outcome = await run(1.0, 30)
        assert outcome.result is TargetResult.ALREADY_DONE, outcome
        assert f"forced rollback: deleted pod web-2 (uid {stuck_uid})" in outcome.detail
        record = await intents.get(key)
        assert record is not None
        assert (record.detail["forced"]["uid"], record.detail["forced"]["state"]) == (stuck_uid, "deleted")
        # Settled: running the intent again deletes nothing more.
        again = await run(1.0, 10)
        assert again.result is TargetResult.ALREADY_DONE, again
        assert "forced rollback" not in again.detail  # the rollout is done before the wait is over
    finally:
        await api.close()
    pods = _pods(kube, namespace)
    assert pods["web-2"]["metadata"]["uid"] != stuck_uid
    assert all(_ready(p) for p in pods.values())
