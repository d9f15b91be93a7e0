"""Deployment events (schema v1) as CI publishes them to Kafka: for the Kafka fault tests and the Kafka benchmark."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer


def deploy_event(i: int, run: str) -> bytes:
    """A distinct, valid ``succeeded`` event: ``run`` keeps every run's event ids new to the deploy history."""
    now = datetime.now(UTC).isoformat()
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": f"{run}-{i}",
            "type": "succeeded",
            "service": f"svc-{i % 40}",
            "namespace": f"team-{i % 8}",
            "deployment": f"web-{i % 40}",
            "revision": i + 1,
            "image": f"registry.local/web:{i}",
            "version": f"1.{i}.0",
            "commit": uuid.uuid4().hex[:12],
            "author": "ci",
            "migration": i % 10 == 0,
            "timestamps": {"occurred_at": now, "started_at": now, "finished_at": now},
        }
    )


async def fill(bootstrap: str, topic: str, count: int) -> None:
    """Publish ``count`` distinct events to ``topic`` and wait until the broker acknowledged all of them."""
    run = uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, deploy_event(i, run)) for i in range(count)]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
