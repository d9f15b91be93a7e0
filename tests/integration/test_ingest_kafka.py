"""Deployment events from the real Kafka: stored before commit, poison to the dead-letter topic, consumer goes on."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from daemon.clock import SystemClock
from daemon.config import KafkaSettings
from daemon.ingest import DeployHistoryStore, Inbox
from daemon.sources.kafka import ERROR_HEADER, REASON_HEADER, DeployConsumer
from daemon.store.db import Store
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration
T = "2026-01-01T10:00:00Z"


def event(event_id: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "type": "succeeded",
        "service": "checkout",
        "namespace": "shop",
        "deployment": "checkout-web",
        "revision": 4,
        "image": "registry/checkout:2.0",
        "migration": False,
        "timestamps": {"occurred_at": T},
    }


def settings(kafka: Kafka) -> KafkaSettings:
    suffix = uuid.uuid4().hex[:8]
    return KafkaSettings(
        enabled=True,
        bootstrap_servers=kafka.bootstrap,
        deploy_topic=f"deploys-{suffix}",
        dead_letter_topic=f"deploys-{suffix}.dlq",
        group_id=f"rollbackd-{suffix}",
    )


async def produce(kafka: Kafka, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"checkout")
    finally:
        await producer.stop()


async def dead_letters(kafka: Kafka, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_event_is_stored(kafka: Kafka, store: Store) -> None:
    cfg = settings(kafka)
    clock = SystemClock()
    inbox, history = Inbox(store, clock), DeployHistoryStore(store)
    good = json.dumps(event("evt-good")).encode()
    await produce(
        kafka, cfg.deploy_topic, [b"{not json", json.dumps(event("x") | {"type": "boom"}).encode(), good, good]
    )
    async with DeployConsumer(cfg, inbox, history, clock) as consumer:
        deadline = time.monotonic() + 90
        while consumer.processed < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert consumer.processed == 4
    items = await inbox.pending(10)
    assert [i.deploy.event_id for i in items if i.deploy] == ["evt-good"]  # the redelivered copy made no second row
    snap = await history.snapshot("shop", "checkout-web", None, items[0].received_at.replace(year=2025))
    assert [e.event_id for e in snap.events] == ["evt-good"]
    letters = await dead_letters(kafka, cfg.dead_letter_topic, 2)
    assert len(letters) == 2
    headers = [dict(r.headers) for r in letters]
    assert [h[REASON_HEADER] for h in headers] == [b"malformed_json", b"schema_invalid"]
    assert b"type" in headers[1][ERROR_HEADER]
    assert [h["x-rollbackd-original-offset"] for h in headers] == [b"0", b"1"]
    assert letters[0].value == b"{not json"


async def test_offsets_are_committed_only_for_stored_events(kafka: Kafka, store: Store) -> None:
    cfg = settings(kafka)
    clock = SystemClock()
    inbox, history = Inbox(store, clock, max_pending=1), DeployHistoryStore(store)
    await produce(kafka, cfg.deploy_topic, [json.dumps(event(f"e{i}")).encode() for i in range(3)])
    async with DeployConsumer(cfg, inbox, history, clock) as consumer:
        deadline = time.monotonic() + 60
        while consumer.processed < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        assert consumer.processed == 1  # inbox full: paused, nothing else committed
        (first,) = await inbox.pending(10)
        await inbox.mark_processed(first.id)  # room again: resumed
        deadline = time.monotonic() + 60
        while consumer.processed < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert consumer.processed == 2
    # A new consumer in the same group starts after the committed offsets: e2 is still to come.
    inbox2 = Inbox(store, clock)
    async with DeployConsumer(cfg, inbox2, history, clock) as again:
        deadline = time.monotonic() + 60
        while again.processed < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    ids = sorted(i.deploy.event_id for i in await inbox2.pending(10) if i.deploy)
    assert ids == ["e1", "e2"]


async def test_batches_over_several_partitions_are_stored_once_and_committed_to_the_end(
    kafka: Kafka, store: Store
) -> None:
    cfg = settings(kafka)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(cfg.deploy_topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(cfg.deploy_topic, value=json.dumps(event(f"m{i}")).encode(), partition=i % 3)
            for i in range(450)
        ]
        sends.append(await producer.send(cfg.deploy_topic, value=b"[1]", partition=1))  # poison amid the rest
        sends += [
            await producer.send(cfg.deploy_topic, value=json.dumps(event(f"m{i}")).encode(), partition=2)
            for i in range(440, 450)  # a producer retry's copies
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    clock = SystemClock()
    inbox, history = Inbox(store, clock), DeployHistoryStore(store)
    async with DeployConsumer(cfg, inbox, history, clock) as consumer:
        deadline = time.monotonic() + 90
        while consumer.processed < 461 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert consumer.processed == 461
    items = await inbox.pending(1000)
    assert sorted(i.deploy.event_id for i in items if i.deploy) == sorted(f"m{i}" for i in range(450))
    snap = await history.snapshot("shop", "checkout-web", None, items[0].received_at.replace(year=2025), limit=1000)
    assert len(snap.events) == 450
    (letter,) = await dead_letters(kafka, cfg.dead_letter_topic, 1)
    assert letter.value == b"[1]"
    # The group's committed offsets reach the end of every partition: a restart re-reads nothing.
    check = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=cfg.group_id, enable_auto_commit=False)
    await check.start()
    try:
        parts = [TopicPartition(cfg.deploy_topic, p) for p in range(3)]
        ends = await check.end_offsets(parts)
        assert {tp: await check.committed(tp) for tp in parts} == ends
    finally:
        await check.stop()
