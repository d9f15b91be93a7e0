"""The outbox's kafka channel against the real broker: queued events reach the topic in order, unchanged.

Events are queued by the real ``Publications`` (as the incident service does, on
``--store`` SQLite or PostgreSQL) and delivered by the real ``OutboxWorker``
through ``KafkaPublisher``; a consumer reads the topic back.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy import select

from daemon.clock import SystemClock
from daemon.config import KafkaSettings
from daemon.errors import PermanentError, TemporaryError
from daemon.incidents.publish import Publications
from daemon.model import ActionKind, ApprovalRequirement, Decision, Severity, Target, TargetOutcome, TargetResult
from daemon.notify.outbox import OutboxWorker
from daemon.sources.publisher import KafkaPublisher
from daemon.store.db import Store
from daemon.store.tables import OutboxRow
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration


def decision(name: str) -> Decision:
    return Decision(
        rule="error-rate-after-deploy",
        severity=Severity.P1,
        action=ActionKind.ROLLBACK_NOW,
        targets=(Target("shop", name),),
        approval=ApprovalRequirement(MappingProxyType({})),
        reason="error ratio 12%",
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens there


async def read_topic(kafka: Kafka, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def queue_events(store: Store, clock: SystemClock) -> dict[str, list[dict[str, Any]]]:
    """Two incidents, each a decision then two actions, written as the incident service writes them."""
    publications = Publications(clock, "rollbackd-0")
    for i in range(2):
        incident_id, name = f"inc-{i}", f"web-{i}"
        async with store.transaction() as s:
            publications.decision(s, incident_id, decision(name))
        async with store.transaction() as s:
            outcomes = [
                TargetOutcome(Target("shop", name), TargetResult.ROLLED_BACK, 7, 6),
                TargetOutcome(Target("shop", name), TargetResult.ALREADY_DONE, 7, 6, "re-driven"),
            ]
            publications.actions(s, incident_id, outcomes, automatic=True)
    async with store.transaction() as s:
        rows = (await s.scalars(select(OutboxRow).where(OutboxRow.channel == "kafka").order_by(OutboxRow.id))).all()
    queued: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        assert row.incident_id is not None
        queued.setdefault(row.incident_id, []).append(dict(row.payload))
    return queued


async def test_queued_events_reach_the_topic_in_order_per_incident_and_unchanged(kafka: Kafka, store: Store) -> None:
    clock = SystemClock()
    topic = f"decisions-{uuid.uuid4().hex[:8]}"
    queued = await queue_events(store, clock)
    async with KafkaPublisher(KafkaSettings(bootstrap_servers=kafka.bootstrap, decisions_topic=topic)) as publisher:
        worker = OutboxWorker(store, clock, [publisher])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await worker.run_once()
            async with store.transaction() as s:
                states = set((await s.scalars(select(OutboxRow.state))).all())
            if states == {"sent"}:
                break
        assert states == {"sent"}
    records = await read_topic(kafka, topic, 6)
    got: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        event = orjson.loads(record.value)
        assert record.key == event["incident_id"].encode()
        assert dict(record.headers) == {"schema": b"decision-event.v1"}
        got.setdefault(event["incident_id"], []).append(event)
    assert got == queued  # per incident: the queued order, and the queued events byte for byte (event ids too)
    assert [e["type"] for e in got["inc-0"]] == ["decision", "action", "action"]


async def test_a_broker_out_of_reach_is_a_temporary_error_and_the_others_wait_without_trying(store: Store) -> None:
    clock = SystemClock()
    queued = await queue_events(store, clock)
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", decisions_topic="decisions")
    async with KafkaPublisher(settings) as publisher:
        started = time.monotonic()
        with pytest.raises(TemporaryError) as first:
            await publisher.deliver(queued["inc-0"][0])
        first_s = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(TemporaryError) as second:
            await publisher.deliver(queued["inc-1"][0])
        second_s = time.monotonic() - started
    assert first.value.reason == second.value.reason == "kafka"
    assert first.value.delay == 1.0
    assert second.value.delay is not None
    assert 0 < second.value.delay <= 1.0  # the same window, not a new attempt with its own backoff
    assert first_s < 10.0
    assert second_s < 0.05  # no connection attempt at all


async def test_an_event_no_broker_would_take_fails_permanently() -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", decisions_topic="decisions")
    bad = {"schema_version": 1, "event_id": "e1", "type": "verdict", "at": datetime.now(UTC).isoformat()}
    async with KafkaPublisher(settings) as publisher:
        with pytest.raises(PermanentError) as caught:
            await publisher.deliver(bad | {"instance": "r", "incident_id": "inc-0", "outbox_id": 3})
    assert caught.value.reason == "schema_invalid"
