"""Which pod a forced rollback deletes: the one an OrderedReady StatefulSet waits for, still on the bad revision."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.actions.forced import not_applicable, stuck_pod

UID = "sts-uid"
BAD, GOOD = "web-bad", "web-good"


def sts(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "uid": UID}, "spec": {"replicas": 3, **spec}}


def pod(ordinal: int, revision: str, *, ready: bool = True, deleting: bool = False, owner: str = UID) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"web-{ordinal}", "uid": f"pod-{ordinal}", "labels": {"controller-revision-hash": revision},
        "ownerReferences": [{"kind": "StatefulSet", "controller": True, "uid": owner}],
    }  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "status": status}


def stuck(obj: dict[str, Any], pods: list[dict[str, Any]], bad: str = BAD) -> str | None:
    found = stuck_pod(obj, pods, bad_revision=bad, restored_revision=GOOD)
    return found.name if found else None


def test_the_pod_the_controller_waits_for_on_the_bad_revision() -> None:
    pods = [pod(0, GOOD), pod(1, GOOD), pod(2, BAD, ready=False)]
    found = stuck_pod(sts(), pods, bad_revision=BAD, restored_revision=GOOD)
    assert found is not None
    assert (found.name, found.uid, found.revision, found.ordinal) == ("web-2", "pod-2", BAD, 2)
    assert stuck(sts(), pods, bad="") == "web-2"  # bad revision unknown: any but the restored one


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        ([pod(0, GOOD), pod(1, GOOD), pod(2, BAD)], "every pod Ready"),
        ([pod(0, GOOD), pod(1, GOOD), pod(2, GOOD, ready=False)], "on the restored revision: not ours"),
        ([pod(0, GOOD), pod(1, GOOD), pod(2, "web-other", ready=False)], "on a third revision"),
        ([pod(0, GOOD), pod(1, GOOD), pod(2, BAD, ready=False, deleting=True)], "already being deleted"),
        ([pod(0, GOOD), pod(1, GOOD), pod(2, BAD, ready=False, owner="other")], "not the StatefulSet's"),
        ([pod(0, GOOD, ready=False), pod(2, BAD, ready=False)], "the controller waits for web-0 first"),
    ],
)
def test_no_pod_to_delete(pods: list[dict[str, Any]], why: str) -> None:
    assert stuck(sts(), pods) is None, why


def test_only_ordered_ready_rolling_updates_and_within_the_partition() -> None:
    pods = [pod(0, GOOD), pod(1, BAD, ready=False), pod(2, BAD)]
    assert stuck(sts(), pods) == "web-1"
    assert stuck(sts(podManagementPolicy="Parallel"), pods) is None
    assert not_applicable(sts(podManagementPolicy="Parallel")) == "podManagementPolicy Parallel"
    assert stuck(sts(updateStrategy={"type": "OnDelete"}), pods) is None
    assert not_applicable(sts(updateStrategy={"type": "OnDelete"})) == "update strategy OnDelete"
    partitioned = sts(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    assert stuck(partitioned, pods) is None  # below the partition the controller never updates
