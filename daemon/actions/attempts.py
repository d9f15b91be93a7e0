"""One automated attempt per bad revision: a second trigger for a template already rolled back from escalates.

Part of the rails around an automatic rollback (beside ``actions.safety``'s
budget and loop breaker), asked first so the decision record names this guard
when it is the one that holds. A "bad revision" is the pod template the
rollback moved away from (its ``pod-template-hash``): after a rollback and a
re-deploy of the same template, Kubernetes gives it a new revision number but
the same ReplicaSet, and it is the same bad revision. The driver
(``incidents.driver``) turns this refusal into a hold: notify and escalate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from daemon.actions.safety import APPLIED_STATES, PastIntent, Refusal
from daemon.actions.undo import UndoPlan
from daemon.control.hold import ONE_ATTEMPT, ONE_ATTEMPT_REFUSAL


def check_one_attempt(
    plan: UndoPlan, past: Sequence[PastIntent], *, now: datetime, window_s: float, exclude_id: str
) -> Refusal | None:
    """Refuse when an automatic rollback from the same template reached the cluster within ``window_s``."""
    if not plan.from_template_hash:
        return None
    since = now - timedelta(seconds=window_s)
    for p in past:
        applied = p.patched or p.state in APPLIED_STATES
        if p.id == exclude_id or not p.automatic or p.dry_run or not applied or p.created_at < since:
            continue
        if p.from_template_hash == plan.from_template_hash:
            incident = p.id.split(":", 1)[0]
            return Refusal(
                ONE_ATTEMPT,
                f"{ONE_ATTEMPT_REFUSAL}: revision {plan.from_revision} is the template already rolled back from "
                f"automatically at {p.created_at:%Y-%m-%d %H:%M UTC} (incident {incident}); a human must decide",
            )
    return None
