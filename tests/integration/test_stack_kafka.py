"""Smoke test of the Kafka test stack with the client rollbackd uses (aiokafka)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration


async def test_produce_and_consume_in_group_with_manual_commit(kafka: Kafka) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:12]}"
    group = f"smoke-group-{uuid.uuid4().hex[:8]}"
    sent = [
        (f"key-{i}".encode(), f"value-{i}".encode(), [("trace-id", f"t{i}".encode()), ("seq", str(i).encode())])
        for i in range(3)
    ]

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in sent:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(60):
            while len(got) < len(sent):
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    got.extend(records)
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()

    assert [(r.key, r.value, list(r.headers)) for r in got] == [(k, v, h) for k, v, h in sent]
    assert [r.offset for r in got] == [0, 1, 2]
    assert committed == 3
