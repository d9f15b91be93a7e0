"""kubectl's StatefulSet and DaemonSet undo decisions on JSON: which revision, which errors, the patch, the skip."""

from __future__ import annotations

import pytest

from daemon.actions.kinds import Workload
from daemon.actions.revisions import plan_revision_undo
from daemon.actions.undo import UndoError
from daemon.target import Target, WorkloadKind
from tests.unit.actions.factories import controller_revision, revision_history, workload

KINDS = [("StatefulSet", WorkloadKind.STATEFULSET), ("DaemonSet", WorkloadKind.DAEMONSET)]


@pytest.fixture(params=KINDS, ids=["statefulset", "daemonset"])
def kind(request: pytest.FixtureRequest) -> tuple[str, WorkloadKind]:
    return request.param  # type: ignore[no-any-return]


def target(kind: WorkloadKind) -> Target:
    return Target("prod", "web", kind)


def test_previous_is_second_highest_revision_number(kind: tuple[str, WorkloadKind]) -> None:
    api_kind, k = kind
    history = revision_history(api_kind)
    plan = plan_revision_undo(target(k), workload(api_kind, "web:v3"), history)
    assert (plan.from_revision, plan.to_revision, plan.to_replicaset) == (3, 2, "web-hv2")
    assert (plan.from_template_hash, plan.to_template_hash) == ("web-hv3", "web-hv2")
    # v1 was rolled back to once: the controller renumbered it 4, so "previous" is now v3.
    history[1]["revision"] = 4
    plan = plan_revision_undo(target(k), workload(api_kind, "web:v1"), history)
    assert (plan.from_revision, plan.to_revision, plan.to_replicaset) == (4, 3, "web-hv3")


def test_patch_is_the_revision_data_as_a_strategic_merge_patch(kind: tuple[str, WorkloadKind]) -> None:
    api_kind, k = kind
    history = revision_history(api_kind)
    plan = plan_revision_undo(target(k), workload(api_kind, "web:v3"), history, 1)
    assert plan.patch_type == "strategic"
    assert plan.patch == history[1]["data"]
    assert plan.patch["spec"]["template"]["$patch"] == "replace"  # type: ignore[call-overload]
    assert plan.patch["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v1"  # type: ignore[call-overload]
    assert plan.patch is not history[1]["data"]  # a copy: the plan is a value


def test_kubectl_errors_in_kubectl_order(kind: tuple[str, WorkloadKind]) -> None:
    api_kind, k = kind
    live = workload(api_kind, "web:v3")
    with pytest.raises(UndoError, match=r"^unable to find specified revision -1 in history$"):
        plan_revision_undo(target(k), live, revision_history(api_kind), -1)
    with pytest.raises(UndoError, match=r"^unable to find specified revision 7 in history$") as err:
        plan_revision_undo(target(k), live, revision_history(api_kind), 7)
    assert err.value.reason == "revision_not_found"
    only = [controller_revision(1, "web:v3", kind=api_kind)]
    with pytest.raises(UndoError, match=r"^no last revision to roll back to$") as err:
        plan_revision_undo(target(k), live, only)
    assert err.value.reason == "no_history"
    with pytest.raises(UndoError, match=r"^no last revision to roll back to$"):
        plan_revision_undo(target(k), live, [])
    # A named revision with a history of one is looked up, as kubectl does.
    assert plan_revision_undo(target(k), live, only, 1).skipped


def test_revisions_of_other_owners_are_not_history(kind: tuple[str, WorkloadKind]) -> None:
    api_kind, k = kind
    foreign = controller_revision(9, "web:v9", owner="someone-else", kind=api_kind)
    unowned = controller_revision(8, "web:v8", kind=api_kind)
    unowned["metadata"]["ownerReferences"][0]["controller"] = False
    history = [*revision_history(api_kind), foreign, unowned]
    assert plan_revision_undo(target(k), workload(api_kind, "web:v3"), history).to_revision == 2
    with pytest.raises(UndoError, match="revision 9"):
        plan_revision_undo(target(k), workload(api_kind, "web:v3"), history, 9)


def test_skip_when_live_template_matches_uses_the_named_number(kind: tuple[str, WorkloadKind]) -> None:
    api_kind, k = kind
    plan = plan_revision_undo(target(k), workload(api_kind, "web:v3"), revision_history(api_kind), 3)
    assert plan.skipped == "skipped rollback (current template already matches revision 3)"
    changed = workload(api_kind, "web:v3")
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    # Any difference in the template, however small, is not a match (kubectl compares the bytes).
    assert not plan_revision_undo(target(k), changed, revision_history(api_kind), 3).skipped


def test_workload_live_hash_and_no_pause(kind: tuple[str, WorkloadKind]) -> None:
    api_kind, k = kind
    loaded = Workload(target(k), workload(api_kind, "web:v2"), tuple(revision_history(api_kind)))
    assert loaded.live_hash == "web-hv2"
    assert not loaded.pausable
    assert not loaded.paused
    assert Workload(target(k), workload(api_kind, "web:v9"), tuple(revision_history(api_kind))).live_hash == ""
    # v2 is live but not the highest number (a template changed back before its revision was
    # renumbered): kubectl's "previous" is number 2, which matches, and it says so with the 0 it was given.
    assert loaded.plan().skipped == "skipped rollback (current template already matches revision 0)"
