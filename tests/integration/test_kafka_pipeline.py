"""The Kafka consumer's pipeline: batch N+1 is fetched while batch N is stored, offsets never pass a failure.

The store refuses one event (a trigger, on SQLite and on PostgreSQL) in the
middle of the topic. While it does, the batches after the refused one are
fetched and may even be stored, but the committed offset stays at the start of
the refused batch, and everything before it is in the history: an offset
commit acknowledges durable events only. Once the store takes the event again,
every event is stored exactly once and the offsets reach the end of the topic.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import select, text

from daemon.clock import SystemClock
from daemon.ingest import DeployHistoryStore
from daemon.sources.kafka import BATCH_SIZE, DeployConsumer
from daemon.store.db import Store
from daemon.store.tables import DeployRow
from tests.integration.test_ingest_kafka import committed, event, settings, wait_processed
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration
EVENTS = 3 * BATCH_SIZE
REFUSED = BATCH_SIZE + BATCH_SIZE // 2  # inside the second batch, with a third one behind it


def _refuse(store: Store, event_id: str) -> list[str]:
    if store.is_sqlite:
        return [
            f"CREATE TRIGGER refuse_one BEFORE INSERT ON deploy_history WHEN NEW.event_id = '{event_id}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ]
    return [
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER refuse_one BEFORE INSERT ON deploy_history FOR EACH ROW "
        f"WHEN (NEW.event_id = '{event_id}') EXECUTE FUNCTION refuse_one()",
    ]


async def _execute(store: Store, statements: list[str]) -> None:
    async with store.connect() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def _stored(store: Store) -> list[str]:
    async with store.transaction() as s:
        return list((await s.execute(select(DeployRow.event_id))).scalars())


async def test_a_failed_batch_stays_uncommitted_while_the_next_is_fetched_and_all_is_stored_once(
    kafka: Kafka, store: Store
) -> None:
    cfg = settings(kafka)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(cfg.deploy_topic, json.dumps(event(f"p-{i}")).encode(), partition=0)
            for i in range(EVENTS)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    await _execute(store, _refuse(store, f"p-{REFUSED}"))
    tp = TopicPartition(cfg.deploy_topic, 0)
    async with DeployConsumer(cfg, DeployHistoryStore(store), SystemClock()) as consumer:
        deadline = time.monotonic() + 60
        while consumer.retries < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert consumer.retries >= 2, "the refused batch is retried"
        offset = (await committed(kafka, cfg))[tp]
        assert offset is not None
        assert 0 < offset <= REFUSED  # the batch before it is committed, not its own
        stored = set(await _stored(store))
        assert {f"p-{i}" for i in range(offset)} <= stored  # every committed offset's event is durable
        assert f"p-{REFUSED}" not in stored
        assert consumer.running
        await _execute(store, ["DROP TRIGGER refuse_one" + ("" if store.is_sqlite else " ON deploy_history")])
        await wait_processed(consumer, EVENTS)
    ids = await _stored(store)
    assert len(ids) == EVENTS
    assert set(ids) == {f"p-{i}" for i in range(EVENTS)}
    assert await committed(kafka, cfg) == {tp: EVENTS}
