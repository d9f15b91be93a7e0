"""Deployment events from the real Kafka: stored in the history before commit, poison dead-lettered, consumer goes on.

Deploy events go to the deploy history only: none of these tests finds a row in the alert inbox.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import func, select

from daemon.clock import SystemClock
from daemon.config import KafkaSettings
from daemon.ingest import DeployHistoryStore
from daemon.model import Target
from daemon.sources.kafka import ERROR_HEADER, REASON_HEADER, DeployConsumer
from daemon.store.db import Store
from daemon.store.tables import InboxRow
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration
T = "2026-01-01T10:00:00Z"
SINCE = datetime(2025, 1, 1, tzinfo=UTC)


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


async def inbox_rows(store: Store) -> int:
    async with store.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(InboxRow))).scalar_one())


async def committed(kafka: Kafka, cfg: KafkaSettings, partitions: int = 1) -> dict[TopicPartition, int | None]:
    check = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=cfg.group_id, enable_auto_commit=False)
    await check.start()
    try:
        return {
            tp: await check.committed(tp) for tp in (TopicPartition(cfg.deploy_topic, p) for p in range(partitions))
        }
    finally:
        await check.stop()


async def wait_processed(consumer: DeployConsumer, count: int) -> None:
    deadline = time.monotonic() + 90
    while consumer.processed < count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert consumer.processed == count


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_event_is_stored(kafka: Kafka, store: Store) -> None:
    cfg = settings(kafka)
    clock = SystemClock()
    history = DeployHistoryStore(store)
    good = json.dumps(event("evt-good")).encode()
    await produce(
        kafka, cfg.deploy_topic, [b"{not json", json.dumps(event("x") | {"type": "boom"}).encode(), good, good]
    )
    async with DeployConsumer(cfg, history, clock) as consumer:
        await wait_processed(consumer, 4)
    snap = await history.snapshot([Target("shop", "checkout-web")], None, SINCE)
    assert [e.event_id for e in snap.events] == ["evt-good"]  # the redelivered copy made no second row
    assert await inbox_rows(store) == 0
    letters = await dead_letters(kafka, cfg.dead_letter_topic, 2)
    assert len(letters) == 2
    headers = [dict(r.headers) for r in letters]
    assert [h[REASON_HEADER] for h in headers] == [b"malformed_json", b"schema_invalid"]
    assert b"type" in headers[1][ERROR_HEADER]
    assert [h["x-rollbackd-original-offset"] for h in headers] == [b"0", b"1"]
    assert letters[0].value == b"{not json"


async def test_offsets_are_committed_only_after_the_history_has_the_events(kafka: Kafka, store: Store) -> None:
    """With the database unreachable the consumer retries and stays up, and commits nothing."""
    cfg = settings(kafka)
    clock = SystemClock()
    await produce(kafka, cfg.deploy_topic, [json.dumps(event(f"e{i}")).encode() for i in range(3)])
    # Nothing listens on port 1: every write is refused, as while the database restarts.
    down = Store("postgresql+asyncpg://rollbackd@127.0.0.1:1/rollbackd")
    try:
        async with DeployConsumer(cfg, DeployHistoryStore(down), clock) as failing:
            deadline = time.monotonic() + 60
            while failing.retries < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert failing.retries >= 3  # the same batch, retried with backoff, by a consumer still running
            assert failing.running
            assert failing.processed == 0
    finally:
        await down.close()
    assert await committed(kafka, cfg) == {TopicPartition(cfg.deploy_topic, 0): None}
    # A consumer in the same group with a working store gets every event: none was skipped.
    history = DeployHistoryStore(store)
    async with DeployConsumer(cfg, history, clock) as again:
        await wait_processed(again, 3)
    snap = await history.snapshot([Target("shop", "checkout-web")], None, SINCE)
    assert sorted(e.event_id for e in snap.events) == ["e0", "e1", "e2"]
    assert await committed(kafka, cfg) == {TopicPartition(cfg.deploy_topic, 0): 3}


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
    history = DeployHistoryStore(store)
    async with DeployConsumer(cfg, history, clock) as consumer:
        await wait_processed(consumer, 461)
    snap = await history.snapshot([Target("shop", "checkout-web")], None, SINCE, limit=1000)
    assert sorted(e.event_id for e in snap.events) == sorted(f"m{i}" for i in range(450))
    assert await inbox_rows(store) == 0
    (letter,) = await dead_letters(kafka, cfg.dead_letter_topic, 1)
    assert letter.value == b"[1]"
    # The group's committed offsets reach the end of every partition: a restart re-reads nothing.
    check = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await check.start()
    try:
        ends = await check.end_offsets([TopicPartition(cfg.deploy_topic, p) for p in range(3)])
    finally:
        await check.stop()
    assert await committed(kafka, cfg, partitions=3) == ends
