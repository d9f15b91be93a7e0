"""Decision and action events for other systems, queued in the transaction of the change they report.

Part of the incident stage. ``IncidentService`` calls ``Publications`` inside
its transactions: when a decision opens or joins an incident, and when a
rollback's ``RollbackFinished`` is recorded (one ``action`` event per target
outcome). Each event becomes an outbox row on the ``kafka`` channel
(``store.outbox.enqueue_publication``); the outbox worker sends it through
``sources.publisher``. Nothing in the incident path waits for Kafka, so a broker
outage delays the events, never a decision or a rollback, and an event exists
if and only if the change it reports was committed. With no ``instance``
(Kafka off or no ``decisions_topic``) nothing is queued: rows for a channel
without a notifier would wait forever.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from daemon.clock import Clock
from daemon.incidents.machine import Incident
from daemon.model import Decision, TargetOutcome, TargetResult
from daemon.sources.decision_events import action_event, decision_event
from daemon.store.outbox import enqueue_publication

ROLLBACK = "rollback"


class Publications:
    """Writes ``decision-event.v1`` rows into the caller's session; does nothing when ``instance`` is None."""

    def __init__(self, clock: Clock, instance: str | None) -> None:
        self._clock = clock
        self._instance = instance

    @property
    def enabled(self) -> bool:
        return self._instance is not None

    def decision(self, s: AsyncSession, incident_id: str, decision: Decision) -> None:
        """The rules (or a break-glass request) decided ``decision`` for ``incident_id``."""
        if self._instance is None:
            return
        now = self._clock.now()
        enqueue_publication(s, decision_event(incident_id, decision, now, instance=self._instance), now)

    def actions(self, s: AsyncSession, incident_id: str, outcomes: Sequence[TargetOutcome], *, automatic: bool) -> None:
        """What the rollback did to each target, in the order the executor reported it."""
        if self._instance is None:
            return
        now = self._clock.now()
        for outcome in outcomes:
            event = action_event(incident_id, ROLLBACK, outcome, now, instance=self._instance, automatic=automatic)
            enqueue_publication(s, event, now)

    def failed(self, s: AsyncSession, inc: Incident, detail: str, *, automatic: bool) -> None:
        """The rollback ended in an error before any target reported: each target failed with it."""
        outcomes = [TargetOutcome(t, TargetResult.FAILED, detail=detail) for t in inc.decision.targets]
        self.actions(s, inc.id, outcomes, automatic=automatic)
