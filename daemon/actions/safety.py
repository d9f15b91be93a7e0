"""The rails around an automatic rollback: GitOps ownership, the rollback budget, the loop breaker.

Pure decisions over the Deployment's JSON, the undo plan and the intents
already recorded for the Deployment, so each rule is tested without a
cluster. A refusal is a ``Refusal`` with a short ``reason`` (a metric label)
and a sentence a responder can act on at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.actions.undo import UndoPlan

ARGO_LABEL = "argocd.argoproj.io/instance"
ARGO_TRACKING = "argocd.argoproj.io/tracking-id"
FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")

# Intent states after which the Deployment was changed by us.
APPLIED_STATES = frozenset({"applied", "ready", "verified"})


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class PastIntent:
    """What safety needs of one recorded intent for the same Deployment."""

    id: str
    state: str
    automatic: bool
    dry_run: bool
    created_at: datetime
    patched: bool  # the undo patch reached the API server
    from_template_hash: str
    to_template_hash: str


def gitops_owner(deployment: Mapping[str, Any]) -> str | None:
    """ "Argo CD application X" / "Flux Kustomization X" when a GitOps controller manages the Deployment."""
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if ARGO_LABEL in labels:
        return f"Argo CD application {labels[ARGO_LABEL]!r}"
    if ARGO_TRACKING in annotations:
        app = str(annotations[ARGO_TRACKING]).split(":", 1)[0]
        return f"Argo CD application {app!r}"
    for key in FLUX_LABELS:
        if key in labels:
            kind = "Kustomization" if key.startswith("kustomize") else "HelmRelease"
            namespace = labels.get(key.replace("/name", "/namespace"), "")
            where = f"{namespace}/{labels[key]}" if namespace else labels[key]
            return f"Flux {kind} {where!r}"
    return None


def check_gitops(deployment: Mapping[str, Any]) -> Refusal | None:
    owner = gitops_owner(deployment)
    if owner is None:
        return None
    return Refusal(
        "gitops",
        f"managed by {owner}: a rollback here would be reverted by the next sync; "
        "revert the change in Git (or suspend the sync) and roll back there",
    )


def check_budget(
    past: Sequence[PastIntent], *, now: datetime, window_s: float, max_rollbacks: int, exclude_id: str
) -> Refusal | None:
    """At most ``max_rollbacks`` automatic rollbacks that reached the cluster in the window."""
    since = now - timedelta(seconds=window_s)
    used = [
        p
        for p in past
        if p.id != exclude_id
        and p.automatic
        and not p.dry_run
        and p.created_at >= since
        and (p.patched or p.state in APPLIED_STATES)
    ]
    if len(used) < max_rollbacks:
        return None
    return Refusal(
        "budget",
        f"rollback budget spent: {len(used)} automatic rollbacks in the last {window_s:g}s "
        f"(limit {max_rollbacks}); a human must decide the next one",
    )


def check_loop(plan: UndoPlan, past: Sequence[PastIntent], *, exclude_id: str) -> Refusal | None:
    """Never automatically roll back a rollback, nor back onto a revision already rolled back from."""
    mine = [p for p in past if p.id != exclude_id and not p.dry_run and (p.patched or p.state in APPLIED_STATES)]
    if plan.from_template_hash and any(p.to_template_hash == plan.from_template_hash for p in mine):
        return Refusal(
            "loop",
            f"revision {plan.from_revision} was itself produced by a rollback; "
            "rolling it back automatically could loop — a human must decide",
        )
    if plan.revision_history:
        return Refusal(
            "loop",
            f"revision {plan.from_revision} returned to an earlier template (revisions {plan.revision_history}), "
            "i.e. it is a rollback; rolling it back automatically could loop — a human must decide",
        )
    known_bad = {p.from_template_hash for p in mine if p.from_template_hash}
    if plan.to_template_hash and plan.to_template_hash in known_bad:
        return Refusal(
            "known_bad",
            f"revision {plan.to_revision} was rolled back from before (known bad); not rolling back onto it",
        )
    return None
