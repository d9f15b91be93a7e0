"""Publishes rollbackd's own decisions and actions to Kafka (``settings.decisions_topic``).

The outbound end of the pipeline for other systems and for replay: incidents
publish a ``decision`` event when the rules conclude something, actions an
``action`` event for each thing done (or refused) on a target. Events follow
``daemon/schemas/decision-event.v1.json`` (documented in ``docs/events.md``),
are validated before sending, and are keyed by incident id so one incident's
events stay in order on one partition. The producer waits for all in-sync
replicas and is idempotent, so a retry inside the client never duplicates.
With ``decisions_topic`` unset, publishing does nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemon.config import KafkaSettings
from daemon.errors import TemporaryError
from daemon.model import Decision, TargetOutcome
from daemon.sources.deploy_events import validate

SCHEMA = "decision-event.v1.json"


def decision_event(
    incident_id: str, decision: Decision, at: datetime, *, instance: str, event_id: str | None = None
) -> dict[str, Any]:
    """The ``decision`` event for ``decision`` (validated against the schema)."""
    event = {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "type": "decision",
        "at": at.isoformat(),
        "instance": instance,
        "incident_id": incident_id,
        "decision": decision.to_json(),
    }
    validate(SCHEMA, event, "decision event")
    return event


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
    """The ``action`` event for one target's outcome (validated against the schema)."""
    event = {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "type": "action",
        "at": at.isoformat(),
        "instance": instance,
        "incident_id": incident_id,
        "action": {
            "name": name,
            "target": str(outcome.target),
            "result": outcome.result.value,
            "from_revision": outcome.from_revision,
            "to_revision": outcome.to_revision,
            "automatic": automatic,
            "detail": outcome.detail,
        },
    }
    validate(SCHEMA, event, "action event")
    return event


class DecisionPublisher:
    """An idempotent producer for the decisions topic; ``start()``/``stop()`` idempotent, ``async with``."""

    def __init__(self, settings: KafkaSettings, *, instance: str = "rollbackd") -> None:
        self._settings = settings
        self.instance = instance
        self._producer: AIOKafkaProducer | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._settings.decisions_topic)

    async def __aenter__(self) -> DecisionPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._producer is not None or not self.enabled:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers,
            client_id=f"{self.instance}-decisions",
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, event: dict[str, Any]) -> None:
        """Send one validated event and wait for the broker's acknowledgement; TemporaryError if it fails."""
        topic = self._settings.decisions_topic
        if not topic:
            return
        if self._producer is None:
            raise TemporaryError("decision publisher is not started", reason="not_started")
        validate(SCHEMA, event, "decision event")
        try:
            await self._producer.send_and_wait(
                topic,
                value=orjson.dumps(event),
                key=str(event["incident_id"]).encode(),
                headers=[("schema", b"decision-event.v1")],
            )
        except KafkaError as exc:
            raise TemporaryError(f"publishing to {topic} failed: {exc}", reason="kafka") from exc

    async def publish_decision(self, incident_id: str, decision: Decision, at: datetime) -> None:
        await self.publish(decision_event(incident_id, decision, at, instance=self.instance))

    async def publish_action(
        self, incident_id: str, name: str, outcome: TargetOutcome, at: datetime, *, automatic: bool = True
    ) -> None:
        await self.publish(action_event(incident_id, name, outcome, at, instance=self.instance, automatic=automatic))


__all__ = ["DecisionPublisher", "action_event", "decision_event"]
