"""The Kafka broker restarts under load: every deployment event stored once, none lost.

A producer publishes distinct deployment events at a steady rate while
rollbackd's ``DeployConsumer`` stores them in the deploy history (``--store``).
Halfway, the only broker is stopped and started again (same data, same
port). Sends that fail during the outage are retried with the same event id
— so the topic may hold duplicates, as it would with a real producer retry.
Afterwards the store must hold exactly one history row per event id (0 lost,
0 duplicate effects) and no row in the alert inbox, which deploy events no
longer pass through.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import func, select

from daemon.clock import SystemClock
from daemon.config import KafkaSettings
from daemon.ingest.history import DeployHistoryStore
from daemon.sources.kafka import DeployConsumer
from daemon.store.db import Store
from daemon.store.tables import DeployRow, InboxRow
from tests.deploy_events import deploy_event
from tests.stack.kafka import Kafka

pytestmark = [pytest.mark.fault, pytest.mark.integration]

EVENTS = 600
RATE_PER_S = 100
DEADLINE_S = 240


async def _send(producer: AIOKafkaProducer, topic: str, value: bytes, deadline: float) -> int:
    """Send until acknowledged; the number of failed attempts (each may have left a copy on the topic)."""
    failures = 0
    while True:
        try:
            await producer.send_and_wait(topic, value)
        except KafkaError:
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        else:
            return failures


async def _counts(store: Store) -> tuple[int, int, int]:
    async with store.transaction() as s:
        inbox = (await s.execute(select(func.count()).select_from(InboxRow))).scalar_one()
        distinct = (await s.execute(select(func.count(func.distinct(DeployRow.event_id))))).scalar_one()
        history = (await s.execute(select(func.count()).select_from(DeployRow))).scalar_one()
    return int(inbox), int(history), int(distinct)


async def test_broker_restart_loses_and_duplicates_nothing(kafka: Kafka, store: Store) -> None:
    deadline = time.monotonic() + DEADLINE_S
    topic = f"deployments-fault-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:6]
    clock = SystemClock()
    settings = KafkaSettings(
        enabled=True, bootstrap_servers=kafka.bootstrap, deploy_topic=topic, group_id=f"rollbackd-fault-{run}"
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", request_timeout_ms=5000)
    await producer.start()
    consumer = DeployConsumer(settings, DeployHistoryStore(store), clock)
    restart: asyncio.Task[dict[str, str]] | None = None
    failed_sends = 0
    try:
        await producer.send_and_wait(topic, deploy_event(0, run))  # the topic exists before the group joins
        await consumer.start()
        for i in range(1, EVENTS):
            if i == EVENTS // 2:
                restart = asyncio.create_task(asyncio.to_thread(kafka.restart))
            failed_sends += await _send(producer, topic, deploy_event(i, run), deadline)
            await asyncio.sleep(1 / RATE_PER_S)
        assert restart is not None
        await restart
        inbox = history = distinct = 0
        while time.monotonic() < deadline:
            inbox, history, distinct = await _counts(store)
            if history >= EVENTS:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # redeliveries still in flight would show up now
        inbox, history, distinct = await _counts(store)
    finally:
        if restart is not None and not restart.done():
            await restart
        await consumer.stop()
        await producer.stop()
    print(f"\nkafka restart under load: {failed_sends} sends retried; inbox {inbox}, history {history} of {EVENTS}")
    assert kafka.starts >= 2, "the broker was restarted"
    assert distinct == EVENTS, f"lost events: {EVENTS - distinct}"
    assert inbox == 0, f"{inbox} deploy events went through the alert inbox"
    assert history == EVENTS, f"history rows {history} for {EVENTS} events (duplicates?)"
