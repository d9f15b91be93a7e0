"""rollbackd's own events (``daemon/schemas/decision-event.v1.json``): a decision, or an action on a target.

The format half of publishing, free of any Kafka client so ``incidents`` can
build an event inside the transaction of the change it reports: the event is
queued as an outbox row on the ``kafka`` channel (``store.outbox.enqueue_publication``)
and ``sources.publisher`` sends it. Everything that varies between deliveries
is fixed here, at enqueue time — ``event_id``, ``at``, ``instance`` — so a
redelivery of the same row is byte-for-byte the same event, recognisable by its
``event_id``. Events are validated when built: a malformed one fails loudly in
the change that made it, not hours later in the delivery worker.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from daemon.model import Decision, TargetOutcome
from daemon.sources.deploy_events import validate

SCHEMA = "decision-event.v1.json"
HEADER = ("schema", b"decision-event.v1")


def _event(
    kind: str, incident_id: str, at: datetime, instance: str, event_id: str | None, **body: Any
) -> dict[str, Any]:
    """The envelope every event shares, around ``body``; validated against the schema."""
    event = {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "type": kind,
        "at": at.isoformat(),
        "instance": instance,
        "incident_id": incident_id,
        **body,
    }
    validate(SCHEMA, event, f"{kind} event")
    return event


def decision_event(
    incident_id: str, decision: Decision, at: datetime, *, instance: str, event_id: str | None = None
) -> dict[str, Any]:
    """The ``decision`` event for ``decision``."""
    return _event("decision", incident_id, at, instance, event_id, decision=decision.to_json())


def action_event(
    incident_id: str,
    name: str,
    outcome: TargetOutcome,
    at: datetime,
    *,
    instance: str,
    automatic: bool = True,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The ``action`` event for one target's outcome."""
    action = {
        "name": name,
        "target": str(outcome.target),
        "result": outcome.result.value,
        "from_revision": outcome.from_revision,
        "to_revision": outcome.to_revision,
        "automatic": automatic,
        "detail": outcome.detail,
    }
    return _event("action", incident_id, at, instance, event_id, action=action)


__all__ = ["HEADER", "SCHEMA", "action_event", "decision_event"]
