"""``kubectl rollout undo`` for StatefulSets and DaemonSets, decision for decision, over ControllerRevisions.

A port of kubectl's ``StatefulSetRollbacker`` and ``DaemonSetRollbacker``
(k8s.io/kubectl pkg/polymorphichelpers/rollback.go and history.go, v0.36):
the ControllerRevisions the workload's selector matches and the workload
controls (owner UID), the second-highest revision *number* when none is named
or exactly the named one, kubectl's errors in kubectl's order, kubectl's skip
when the live template already is the revision's, and the strategic-merge
patch that is the revision's ``data`` as stored. Pure, so it is tested without
a cluster; ``actions.kinds`` loads the objects and sends the patch.

kubectl decides "already matches" by comparing bytes: the patch it would
record for the live object (``{"spec": {"template": {..., "$patch":
"replace"}}}``, marshalled by Go with sorted keys) against the revision's raw
data, which the controller marshalled the same way. Comparing the decoded JSON
is the same test on canonical documents, and is what is done here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.actions.undo import UndoError, UndoPlan, is_controlled_by, revision_not_found_error
from daemon.target import Target, WorkloadKind


def no_last_revision_error() -> UndoError:
    return UndoError("no last revision to roll back to", reason="no_history")


def revision_number(revision: Mapping[str, Any]) -> int:
    return int(revision.get("revision") or 0)


def revision_hash(revision: Mapping[str, Any]) -> str:
    """What identifies the revision's template: its name, ``<workload>-<hash of the data>``.

    The name, not a label: the DaemonSet controller labels its revisions ``controller-revision-hash``,
    the StatefulSet controller ``controller.kubernetes.io/hash``, and both derive the name from it.
    """
    return str((revision.get("metadata") or {}).get("name", ""))


def controlled_history(workload: Mapping[str, Any], revisions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """kubectl's ``controlledHistory``: the selected revisions the workload controls, by revision number."""
    owned = [dict(r) for r in revisions if is_controlled_by(r, workload)]
    # kubectl's sort.Sort by Revision; the name breaks ties so the order never depends on the list order.
    return sorted(owned, key=lambda r: (revision_number(r), str((r.get("metadata") or {}).get("name", ""))))


def live_patch(workload: Mapping[str, Any]) -> dict[str, Any]:
    """kubectl's ``getStatefulSetPatch``/``getDaemonSetPatch``: the live template, to replace the stored one."""
    template = copy.deepcopy(dict((workload.get("spec") or {}).get("template") or {}))
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def matches(workload: Mapping[str, Any], revision: Mapping[str, Any]) -> bool:
    """kubectl's ``statefulsetMatch``/``daemonSetMatch``."""
    return live_patch(workload) == revision.get("data")


def find_history(to_revision: int, history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """kubectl's ``findHistory`` over history sorted by revision: the 2nd highest, or exactly ``to_revision``."""
    if to_revision == 0:
        return history[-2] if len(history) > 1 else None
    return next((r for r in history if revision_number(r) == to_revision), None)


def current_revision(workload: Mapping[str, Any], history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The revision recording the live template (the highest, should the controller have left two)."""
    return next((r for r in reversed(history) if matches(workload, r)), None)


def plan_revision_undo(
    target: Target, workload: Mapping[str, Any], revisions: Sequence[Mapping[str, Any]], to_revision: int = 0
) -> UndoPlan:
    """Everything kubectl decides before its patch, in kubectl's order; raises UndoError as kubectl errs."""
    if target.kind is WorkloadKind.DEPLOYMENT:
        raise ValueError("Deployments are undone over ReplicaSets (actions.undo.plan_undo)")
    if to_revision < 0:
        raise revision_not_found_error(to_revision)
    history = controlled_history(workload, revisions)
    if to_revision == 0 and len(history) <= 1:
        raise no_last_revision_error()
    chosen = find_history(to_revision, history)
    if chosen is None:
        raise revision_not_found_error(to_revision)
    current = current_revision(workload, history)
    skipped = ""
    if matches(workload, chosen):
        skipped = f"skipped rollback (current template already matches revision {to_revision})"
    return UndoPlan(
        target=target,
        from_revision=revision_number(current) if current else (revision_number(history[-1]) if history else None),
        to_revision=revision_number(chosen),
        to_replicaset=str((chosen.get("metadata") or {}).get("name", "")),
        to_template_hash=revision_hash(chosen),
        from_template_hash=revision_hash(current) if current else "",
        patch=copy.deepcopy(dict(chosen.get("data") or {})),
        patch_type="strategic",
        skipped=skipped,
    )
