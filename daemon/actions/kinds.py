"""One workload of any kind, as the executor sees it: loaded with its history, planned, and judged as applied.

The executor, the group run and ``reconcile`` ask the same three questions of
every target — what would kubectl's undo do, which template is live, was our
undo applied — and this module answers them per kind: a Deployment over its
ReplicaSets (``actions.undo``), a StatefulSet or DaemonSet over its
ControllerRevisions (``actions.revisions``). Only Deployments can be paused
(``spec.paused``); the others have no such field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.actions import revisions
from daemon.actions.client import KubeApi
from daemon.actions.undo import HASH_LABEL, UndoPlan, current_replicaset, label_selector, plan_undo
from daemon.target import Target, WorkloadKind


@dataclass(frozen=True, slots=True)
class Workload:
    """The live object and its history (ReplicaSets or ControllerRevisions), as the API served them."""

    target: Target
    obj: Mapping[str, Any]
    history: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def pausable(self) -> bool:
        return self.target.kind is WorkloadKind.DEPLOYMENT

    @property
    def paused(self) -> bool:
        return self.pausable and bool((self.obj.get("spec") or {}).get("paused"))

    @property
    def live_hash(self) -> str:
        """The hash of the history entry that records the live template ("" when none does yet)."""
        if self.target.kind is WorkloadKind.DEPLOYMENT:
            current = current_replicaset(self.obj, self.history)
            return str(((current or {}).get("metadata") or {}).get("labels", {}).get(HASH_LABEL, ""))
        live = revisions.current_revision(self.obj, revisions.controlled_history(self.obj, self.history))
        return revisions.revision_hash(live) if live else ""

    def plan(self, to_revision: int = 0, *, ignore_paused: bool = False) -> UndoPlan:
        """kubectl's undo decision for this kind; raises ``UndoError`` where kubectl errs."""
        if self.target.kind is WorkloadKind.DEPLOYMENT:
            return plan_undo(self.obj, self.history, to_revision, ignore_paused=ignore_paused)
        return revisions.plan_revision_undo(self.target, self.obj, self.history, to_revision)


async def load(kube: KubeApi, target: Target) -> Workload:
    """The workload and the history its selector matches (kubectl's ``daemonSetHistory`` & co.)."""
    obj = await kube.get_workload(target)
    selector = label_selector(obj)
    if target.kind is WorkloadKind.DEPLOYMENT:
        history = await kube.list_replicasets(target.namespace, selector)
    else:
        history = await kube.list_controllerrevisions(target.namespace, selector)
    return Workload(target, obj, tuple(history))
