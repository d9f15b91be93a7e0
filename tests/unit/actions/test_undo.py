"""kubectl's undo decisions on JSON: which revision, which errors in which order, the patch."""

from __future__ import annotations

import pytest

from daemon.actions.undo import (
    UndoError,
    equal_ignore_hash,
    label_selector,
    plan_undo,
    rollback_annotations,
    select_revision,
)
from tests.unit.actions.factories import deployment, history, replicaset, template


def test_previous_is_second_highest_revision_not_second_newest() -> None:
    rs = history()
    # v1 was rolled back to once, so it now carries the highest revision.
    rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "4"
    dep = deployment("web:v1", "4")
    assert select_revision(dep, rs)["metadata"]["name"] == "web-hv3"


def test_given_revision_and_errors() -> None:
    dep = deployment("web:v3", "3")
    assert select_revision(dep, history(), 1)["metadata"]["name"] == "web-hv1"
    with pytest.raises(UndoError, match=r"^unable to find specified revision 7 in history$"):
        select_revision(dep, history(), 7)
    with pytest.raises(UndoError, match=r'^no rollout history found for deployment "web"$'):
        select_revision(dep, history()[2:])


def test_replicasets_of_other_controllers_and_bad_revisions_are_ignored() -> None:
    foreign = replicaset("9", "web:v9", owner="another-deployment")
    garbled = replicaset("two", "web:v8")
    dep = deployment("web:v3", "3")
    assert select_revision(dep, [*history(), foreign, garbled])["metadata"]["name"] == "web-hv2"
    with pytest.raises(UndoError, match="revision 9"):
        select_revision(dep, [*history(), foreign], 9)


def test_missing_revision_is_reported_before_paused_as_kubectl_does() -> None:
    dep = deployment("web:v3", "3", paused=True)
    with pytest.raises(UndoError) as err:
        plan_undo(dep, history(), 7)
    assert err.value.reason == "revision_not_found"
    with pytest.raises(UndoError, match=r"^you cannot rollback a paused deployment; resume it first") as err:
        plan_undo(dep, history())
    assert err.value.reason == "paused"
    assert plan_undo(dep, history(), ignore_paused=True).to_revision == 2


def test_negative_revision_is_not_found() -> None:
    with pytest.raises(UndoError, match="revision -1"):
        plan_undo(deployment("web:v3", "3"), history(), -1)


def test_patch_replaces_template_without_hash_and_annotations() -> None:
    dep = deployment(
        "web:v3",
        "3",
        annotations={
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "deployment.kubernetes.io/revision-history": "1",
            "note": "three",
            "owner": "team-a",
        },
    )
    rs = history()
    rs[1]["metadata"]["annotations"].update(
        {"deployment.kubernetes.io/desired-replicas": "2", "deprecated.deployment.rollback.to": "1"}
    )
    plan = plan_undo(dep, rs)
    template_op, annotations_op = plan.patch
    assert template_op["op"] == "replace"
    assert template_op["path"] == "/spec/template"
    assert template_op["value"]["metadata"]["labels"] == {"app": "web"}
    assert template_op["value"]["spec"]["containers"][0]["image"] == "web:v2"
    assert annotations_op["path"] == "/metadata/annotations"
    # Skipped keys keep the Deployment's values; the rest come from the ReplicaSet ("owner" is dropped).
    assert annotations_op["value"] == {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        "deployment.kubernetes.io/revision": "3",
        "deployment.kubernetes.io/revision-history": "1",
        "note": "two",
    }
    assert plan.warning.startswith("resource deployments/web was previously managed with 'kubectl apply'.")
    assert (plan.from_revision, plan.to_revision) == (3, 2)
    assert (plan.from_template_hash, plan.to_template_hash) == ("hv3", "hv2")
    assert rs[1]["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "hv2"  # input untouched


def test_rollback_annotations_without_skipped_keys_on_deployment() -> None:
    dep = deployment("web:v3", "3")
    del dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    assert rollback_annotations(dep, history()[0]) == {"note": "one"}


def test_current_template_is_skipped_with_kubectls_message() -> None:
    plan = plan_undo(deployment("web:v3", "3"), history(), 3)
    assert plan.skipped == "skipped rollback (current template already matches revision 3)"


def test_equal_ignore_hash_is_semantic_about_empty_fields() -> None:
    a = template("web:v1", hash_="abc")
    b = template("web:v1")
    b["spec"].pop("volumes")
    b["spec"]["containers"][0].pop("resources")
    assert equal_ignore_hash(a, b)
    assert not equal_ignore_hash(a, template("web:v1", extra_labels={"track": "canary"}))


def test_label_selector_string() -> None:
    dep = deployment("web:v1", "1")
    dep["spec"]["selector"] = {
        "matchLabels": {"tier": "api", "app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "eu"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector(dep) == "app=web,tier=api,env in (eu,prod),!canary"
