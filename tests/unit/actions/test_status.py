"""kubectl's rollout-status judgement, and the wait that gives up at the timeout in fake time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.actions.pods import pod_warnings
from daemon.actions.status import RolloutFailedError, RolloutTimeoutError, rollout_state, wait_for_rollout
from daemon.clock import FakeClock
from daemon.model import Target
from daemon.target import WorkloadKind
from tests.unit.actions.factories import deployment, workload


def with_status(**status: Any) -> dict[str, Any]:
    dep = deployment("web:v1", "4")
    dep["status"] = {"observedGeneration": 5, **status}
    return dep


@pytest.mark.parametrize(
    ("status", "done", "message"),
    [
        ({"observedGeneration": 4}, False, "Waiting for deployment spec update to be observed..."),
        ({"updatedReplicas": 1, "replicas": 2}, False, "1 out of 2 new replicas have been updated..."),
        ({"updatedReplicas": 2, "replicas": 3}, False, "1 old replicas are pending termination..."),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}, False, "1 of 2 updated replicas are available"),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}, True, '"web" successfully rolled out'),
    ],
)
def test_rollout_state_as_kubectl(status: dict[str, Any], done: bool, message: str) -> None:
    state = rollout_state(with_status(**status))
    assert state.done is done
    assert message in state.message
    assert state.revision == 4


def test_progress_deadline_is_a_failure() -> None:
    dep = with_status(
        updatedReplicas=1, conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    )
    with pytest.raises(RolloutFailedError, match='deployment "web" exceeded its progress deadline'):
        rollout_state(dep)


class StuckDeployment:
    """Implements the one call ``wait_for_rollout`` makes; the rollout never finishes."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_workload(self, target: Target) -> dict[str, Any]:
        self.calls += 1
        return with_status(updatedReplicas=1, replicas=2)

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        assert (namespace, label_selector) == ("prod", "app=web")
        return [crashing_pod("web-abc12")]


def crashing_pod(name: str) -> dict[str, Any]:
    """A pod as the API server serves one whose container keeps crashing."""
    return {
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": "web"}},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": [{
                "name": "web", "ready": False, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 1m20s restarting failed container=web pod=" + name}},
            }],
        },
    }  # fmt: skip


async def test_wait_times_out_in_fake_time(clock: FakeClock) -> None:
    kube = StuckDeployment()
    start = clock.now()
    task = asyncio.create_task(wait_for_rollout(kube, Target("prod", "web"), clock, 300))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    while not task.done() and (clock.now() - start).total_seconds() < 400:
        await clock.advance(1)
    assert task.done()
    assert (clock.now() - start).total_seconds() == 300
    with pytest.raises(RolloutTimeoutError, match=r"not finished after 300s: .*1 out of 2 new replicas") as err:
        await task
    assert str(err.value).endswith(
        "; pod web-abc12: CrashLoopBackOff (back-off 1m20s restarting failed container=web pod=web-abc12)"
    )
    assert kube.calls == 301  # one look per second, the last one at the deadline


def sts_with(
    status: dict[str, Any], *, partition: int | None = None, strategy: str = "RollingUpdate"
) -> dict[str, Any]:
    sts = workload("StatefulSet", "web:v1", partition=partition, strategy=strategy)
    sts["status"] = {"observedGeneration": 3, **status}
    return sts


@pytest.mark.parametrize(
    ("status", "partition", "done", "message"),
    [
        ({"observedGeneration": 0}, None, False, "Waiting for statefulset spec update to be observed..."),
        ({"observedGeneration": 2}, None, False, "Waiting for statefulset spec update to be observed..."),
        ({"readyReplicas": 2}, None, False, "Waiting for 1 pods to be ready..."),
        ({"readyReplicas": 3, "updatedReplicas": 1}, None, False,
         "Waiting for partitioned roll out to finish: 1 out of 3 new pods have been updated..."),
        ({"readyReplicas": 3, "updatedReplicas": 1}, 2, True,
         "partitioned roll out complete: 1 new pods have been updated..."),
        ({"readyReplicas": 3, "updatedReplicas": 0}, 2, False,
         "Waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated..."),
        ({"readyReplicas": 3, "updatedReplicas": 3}, None, True,
         "partitioned roll out complete: 3 new pods have been updated..."),
    ],
)  # fmt: skip
def test_statefulset_state_as_kubectl(status: dict[str, Any], partition: int | None, done: bool, message: str) -> None:
    state = rollout_state(sts_with(status, partition=partition), WorkloadKind.STATEFULSET)
    assert (state.done, state.message) == (done, message)


def test_statefulset_without_rolling_update_compares_revisions() -> None:
    sts = sts_with({"readyReplicas": 3, "updatedReplicas": 3, "currentReplicas": 3,
                    "updateRevision": "web-b", "currentRevision": "web-a"})  # fmt: skip
    del sts["spec"]["updateStrategy"]["rollingUpdate"]
    state = rollout_state(sts, WorkloadKind.STATEFULSET)
    assert (state.done, state.message) == (
        False,
        "waiting for statefulset rolling update to complete 3 pods at revision web-b...",
    )
    sts["status"]["currentRevision"] = "web-b"
    state = rollout_state(sts, WorkloadKind.STATEFULSET)
    assert (state.done, state.message) == (True, "statefulset rolling update complete 3 pods at revision web-b...")


@pytest.mark.parametrize("api_kind", ["StatefulSet", "DaemonSet"])
def test_on_delete_is_template_restored_pods_not_replaced(api_kind: str) -> None:
    obj = workload(api_kind, "web:v1", strategy="OnDelete")
    state = rollout_state(obj, WorkloadKind.parse(api_kind))
    assert state.done
    assert "template restored, pods not replaced" in state.message
    assert "OnDelete" in state.message


@pytest.mark.parametrize(
    ("status", "done", "message"),
    [
        ({"observedGeneration": 2}, False, "Waiting for daemon set spec update to be observed..."),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 1}, False,
         'Waiting for daemon set "web" rollout to finish: 1 out of 3 new pods have been updated...'),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}, False,
         'Waiting for daemon set "web" rollout to finish: 2 of 3 updated pods are available...'),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}, True,
         'daemon set "web" successfully rolled out'),
    ],
)  # fmt: skip
def test_daemonset_state_as_kubectl(status: dict[str, Any], done: bool, message: str) -> None:
    ds = workload("DaemonSet", "web:v1")
    ds["status"] = {"observedGeneration": 3, **status}
    state = rollout_state(ds, WorkloadKind.DAEMONSET)
    assert (state.done, state.message) == (done, message)


def test_pod_warnings_name_what_kubectl_shows() -> None:
    pull = crashing_pod("web-1")
    pull["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ImagePullBackOff"}}
    config = crashing_pod("web-2")
    config["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "db" not found'}
    }
    pending = {
        "metadata": {"name": "web-3"},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                   "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]},
    }  # fmt: skip
    fine = crashing_pod("web-4")
    fine["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    going = crashing_pod("web-5")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_warnings([fine, pending, config, pull, going]) == [
        "pod web-1: ImagePullBackOff",
        'pod web-2: CreateContainerConfigError (secret "db" not found)',
        "pod web-3: Unschedulable (0/1 nodes are available: 1 Insufficient cpu.)",
    ]
    many = [crashing_pod(f"web-{i}") for i in range(8)]
    assert pod_warnings(many)[-1] == "and 3 more pods"
    assert len(pod_warnings(many)) == 6
