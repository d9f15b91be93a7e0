"""Which Kubernetes Events an incident's rollback produces, queued in the transaction of the change.

Part of the incident stage. The driver (``incidents.driver``) calls
``KubeEvents`` when it records a rollback's result or a hold: for each target
one ``RollbackDecided`` row and then one ``RolledBack`` (and an annotation
naming the incident) or ``RollbackRefused`` row, on the outbox's
``kubernetes`` channel, which ``actions.events`` delivers to the cluster.
Queued with the change, so an Event exists if and only if the change does,
and a cluster that is down delays it, never the rollback. Off (nothing
queued) when no cluster is connected: rows for a channel without a notifier
would wait forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from daemon.incidents.machine import Incident
from daemon.model import TargetOutcome, TargetResult
from daemon.store.tables import OutboxRow

CHANNEL = "kubernetes"
DECIDED, ROLLED_BACK, REFUSED = "RollbackDecided", "RolledBack", "RollbackRefused"
_DONE = {TargetResult.ROLLED_BACK, TargetResult.ALREADY_DONE}


def _approved_by(inc: Incident) -> str:
    if not inc.approvals:
        return "no approval required" if not inc.decision.approval.required else "not approved"
    return "approved by " + ", ".join(f"{v.approver} ({v.role})" for v in inc.approvals)


def _revisions(t: TargetOutcome) -> str:
    if t.from_revision is not None and t.to_revision is not None:
        return f"revision {t.from_revision} → {t.to_revision}"
    return "no revision to go back to"


def _event(inc: Incident, target: str, reason: str, message: str, kind: str) -> dict[str, Any]:
    return {"incident_id": inc.id, "target": target, "reason": reason, "message": message, "type": kind}


class KubeEvents:
    """Queues the Event rows; ``enabled`` is False when no cluster is connected."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def outcomes(self, s: AsyncSession, inc: Incident, outcomes: Sequence[TargetOutcome], now: datetime) -> None:
        """A rollback's result: decided, then rolled back or refused, per target."""
        for t in outcomes:
            line = f"{_revisions(t)} by rule {inc.decision.rule}, incident {inc.id}, {_approved_by(inc)}"
            self._row(s, now, _event(inc, str(t.target), DECIDED, line, "Normal"))
            if t.result in _DONE:
                done = f"{_revisions(t)} at {now:%Y-%m-%d %H:%M:%S UTC}"
                self._row(s, now, _event(inc, str(t.target), ROLLED_BACK, line, "Normal") | {"annotate": done})
            elif t.result is not TargetResult.DRY_RUN:
                self._row(s, now, _event(inc, str(t.target), REFUSED, f"{line}: {t.detail}", "Warning"))

    def held(self, s: AsyncSession, inc: Incident, outcomes: Sequence[TargetOutcome], why: str, now: datetime) -> None:
        """A guard held the rollback: decided, then refused with the guard's sentence (a shadow rule's too)."""
        by_target = {str(t.target): t for t in outcomes}
        for target in inc.decision.targets:
            t = by_target.get(str(target))
            line = f"{_revisions(t) if t else 'rollback'} by rule {inc.decision.rule}, incident {inc.id}"
            self._row(s, now, _event(inc, str(target), DECIDED, f"{line}, {_approved_by(inc)}", "Normal"))
            self._row(s, now, _event(inc, str(target), REFUSED, f"{line}: {why}", "Warning"))

    def _row(self, s: AsyncSession, now: datetime, payload: dict[str, Any]) -> None:
        if not self.enabled:
            return
        s.add(
            OutboxRow(
                incident_id=payload["incident_id"], channel=CHANNEL, kind=str(payload["reason"])[:32],
                payload=payload, state="pending", attempts=0, next_attempt_at=now, created_at=now,
            )
        )  # fmt: skip
