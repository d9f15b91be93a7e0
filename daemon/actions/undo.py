"""``kubectl rollout undo`` for Deployments, decision for decision, through the API.

A port of kubectl's ``DeploymentRollbacker.Rollback`` (k8s.io/kubectl
pkg/polymorphichelpers/rollback.go, v0.36) and the ReplicaSet helpers it
uses (pkg/util/deployment): the ReplicaSets controlled by the Deployment,
the previous (second-highest) revision or a given one, the same errors in the
same order, the same skip when the template already matches, the template
without ``pod-template-hash``, the same annotation handling and the same JSON
patch. Planning is pure (``plan_undo``) so it is tested without a cluster;
``load`` and ``apply_plan`` are the API calls around it, which the executor
makes (``actions.executor``, with the intent, the fence and the checks).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.actions.client import KubeApi, PatchType
from daemon.errors import PermanentError
from daemon.model import Target

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"

# kubectl's annotationsToSkip: kept from the Deployment, never copied from the ReplicaSet.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ANNOTATIONS_TO_SKIP = frozenset(
    {
        LAST_APPLIED,
        REVISION,
        REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)

_INT = re.compile(r"^[+-]?\d+$")  # what Go's strconv.ParseInt accepts in base 10


class UndoError(PermanentError):
    """kubectl would have refused too; the message is kubectl's."""


def no_history_error(name: str) -> UndoError:
    return UndoError(f'no rollout history found for deployment "{name}"', reason="no_history")


def revision_not_found_error(revision: int) -> UndoError:
    return UndoError(f"unable to find specified revision {revision} in history", reason="revision_not_found")


def paused_error() -> UndoError:
    return UndoError(
        "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again",
        reason="paused",
    )


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """kubectl's ``Revision``: 0 without the annotation, None (skipped) when it is not an integer."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    if raw is None:
        return 0
    return int(raw) if _INT.match(str(raw)) else None


def _prune(value: Any) -> Any:
    """Go's semantic equality treats nil and empty maps/slices alike; JSON drops nil as null."""
    if isinstance(value, Mapping):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v not in ({}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(template))
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return out


def equal_ignore_hash(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """kubectl's ``equalIgnoreHash`` on two pod templates as JSON."""
    return bool(_prune(template_without_hash(a)) == _prune(template_without_hash(b)))


def _template(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("spec") or {}).get("template") or {}


def template_hash(rs: Mapping[str, Any]) -> str:
    return str(((rs.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL, ""))


def is_controlled_by(rs: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    uid = (deployment.get("metadata") or {}).get("uid")
    refs = (rs.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def label_selector(deployment: Mapping[str, Any]) -> str:
    """The Deployment's selector as a label-selector string (metav1.LabelSelectorAsSelector)."""
    sel = (deployment.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _creation_key(rs: Mapping[str, Any]) -> tuple[str, str]:
    meta = rs.get("metadata") or {}
    # RFC 3339 UTC timestamps with one precision sort correctly as strings.
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def owned_replicasets(deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """kubectl's ``allOldRSs + newRS``: controlled ReplicaSets by creation, the new one last."""
    owned = sorted((dict(rs) for rs in replicasets if is_controlled_by(rs, deployment)), key=_creation_key)
    current = _template(deployment)
    new = next((rs for rs in owned if equal_ignore_hash(_template(rs), current)), None)
    if new is None:
        return owned
    return [rs for rs in owned if rs is not new] + [new]


def current_replicaset(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The oldest controlled ReplicaSet whose template is the Deployment's (kubectl's ``findNewReplicaSet``)."""
    owned = sorted((dict(rs) for rs in replicasets if is_controlled_by(rs, deployment)), key=_creation_key)
    current = _template(deployment)
    return next((rs for rs in owned if equal_ignore_hash(_template(rs), current)), None)


def select_revision(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]], to_revision: int = 0
) -> dict[str, Any]:
    """kubectl's ``deploymentRevision``: the second-highest revision, or exactly ``to_revision``."""
    latest: dict[str, Any] | None = None
    latest_rev = -1
    previous: dict[str, Any] | None = None
    previous_rev = -1
    for rs in owned_replicasets(deployment, replicasets):
        v = revision_of(rs)
        if v is None:
            continue
        if to_revision == 0:
            if latest_rev < v:
                previous, previous_rev = latest, latest_rev
                latest, latest_rev = rs, v
            elif previous_rev < v:
                previous, previous_rev = rs, v
        elif to_revision == v:
            return rs
    if to_revision > 0:
        raise revision_not_found_error(to_revision)
    if previous is None:
        raise no_history_error(str((deployment.get("metadata") or {}).get("name", "")))
    return previous


def rollback_annotations(deployment: Mapping[str, Any], rs: Mapping[str, Any]) -> dict[str, str]:
    """The Deployment's skipped annotations, plus every other annotation of the ReplicaSet."""
    dep_ann = (deployment.get("metadata") or {}).get("annotations") or {}
    rs_ann = (rs.get("metadata") or {}).get("annotations") or {}
    out = {k: str(dep_ann[k]) for k in ANNOTATIONS_TO_SKIP if k in dep_ann}
    out.update({k: str(v) for k, v in rs_ann.items() if k not in ANNOTATIONS_TO_SKIP})
    return out


def undo_patch(deployment: Mapping[str, Any], rs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """kubectl's ``getDeploymentPatch``: replace the template and the annotations, nothing else."""
    return [
        {"op": "replace", "path": "/spec/template", "value": template_without_hash(_template(rs))},
        {"op": "replace", "path": "/metadata/annotations", "value": rollback_annotations(deployment, rs)},
    ]


@dataclass(frozen=True, slots=True)
class UndoPlan:
    """What ``undo`` will do (or found already done) to one workload of any kind.

    For a Deployment the history is its ReplicaSets and the patch a JSON patch; for a
    StatefulSet or DaemonSet (``actions.revisions``) the history is its ControllerRevisions,
    the hashes are their ``controller-revision-hash`` and the patch is the revision's data,
    sent as a strategic-merge patch.
    """

    target: Target
    from_revision: int | None  # the workload's revision now
    to_revision: int  # the revision being restored (before the controller renumbers it)
    to_replicaset: str  # the ReplicaSet (or ControllerRevision) being restored
    to_template_hash: str
    from_template_hash: str  # "" when the current template has no ReplicaSet (revision) yet
    patch: tuple[dict[str, Any], ...] | dict[str, Any]
    patch_type: PatchType = "json"
    skipped: str = ""  # kubectl's "skipped rollback (...)" message when nothing is to do
    revision_history: str = ""  # the current ReplicaSet's revision-history: it was returned to before
    warning: str = ""  # kubectl's warning for a Deployment managed with ``kubectl apply``


def plan_undo(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    to_revision: int = 0,
    *,
    ignore_paused: bool = False,
) -> UndoPlan:
    """Everything kubectl decides before its patch, in kubectl's order; raises UndoError as kubectl errs.

    ``ignore_paused`` is for the group executor, which pauses the Deployments itself
    before undoing them (seed 8.2); a Deployment paused by someone else is refused.
    """
    if to_revision < 0:
        raise revision_not_found_error(to_revision)
    meta = deployment.get("metadata") or {}
    target = Target(str(meta.get("namespace", "")), str(meta.get("name", "")))
    rs = select_revision(deployment, replicasets, to_revision)
    if (deployment.get("spec") or {}).get("paused") and not ignore_paused:
        raise paused_error()
    current = current_replicaset(deployment, replicasets)
    chosen_rev = revision_of(rs) or 0
    skipped = ""
    if equal_ignore_hash(_template(rs), _template(deployment)):
        skipped = f"skipped rollback (current template already matches revision {to_revision})"
    history = ((current or {}).get("metadata") or {}).get("annotations") or {}
    return UndoPlan(
        target=target,
        from_revision=revision_of(deployment),
        to_revision=chosen_rev,
        to_replicaset=str((rs.get("metadata") or {}).get("name", "")),
        to_template_hash=template_hash(rs),
        from_template_hash=template_hash(current) if current else "",
        patch=tuple(undo_patch(deployment, rs)),
        skipped=skipped,
        revision_history=str(history.get(REVISION_HISTORY, "")),
        warning=_apply_warning(target) if LAST_APPLIED in (meta.get("annotations") or {}) else "",
    )


def _apply_warning(target: Target) -> str:
    return (
        f"resource deployments/{target.name} was previously managed with 'kubectl apply'. Rolling back will not "
        f"update the {LAST_APPLIED} annotation, which may cause unexpected behavior on future 'kubectl apply' "
        "operations. Consider using 'kubectl apply' with your previous configuration file instead."
    )


async def load(kube: KubeApi, target: Target) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Deployment and the ReplicaSets its selector matches."""
    deployment = await kube.get_deployment(target.namespace, target.name)
    replicasets = await kube.list_replicasets(target.namespace, label_selector(deployment))
    return deployment, replicasets


async def apply_plan(kube: KubeApi, plan: UndoPlan, *, dry_run: bool = False) -> dict[str, Any] | None:
    """Send the plan's patch (server-side dry run if asked); None when kubectl would have skipped."""
    if plan.skipped:
        return None
    body = list(plan.patch) if isinstance(plan.patch, tuple) else plan.patch
    return await kube.patch_workload(plan.target, body, patch_type=plan.patch_type, dry_run=dry_run)
