"""Kafka: deployment events/s stored by rollbackd's DeployConsumer vs a raw aiokafka consumer.

One topic is filled with distinct, valid deployment events (schema v1). Then,
alternating, each run:
- raw: an ``AIOKafkaConsumer`` in a new group reads the topic with
  ``getmany`` of 100 records and commits after each batch (what any careful
  consumer does); this is the baseline of the ratio;
- rollbackd: a ``DeployConsumer`` in a new group with a fresh SQLite store and
  its shipped settings (batches of ``daemon.sources.kafka.BATCH_SIZE``,
  pipelined): parse and validate every message, write it to the deploy
  history, commit. The history rows are counted afterwards (and the inbox,
  which must stay empty).
- raw at rollbackd's batch size, reported beside the ratio (not its baseline):
  what the larger batches alone give a consumer that stores nothing.
Both are timed from their first record to the last, so joining the group is
not counted. Target: rollbackd at least 0.8 times raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import median, quiet, ratio, summary
from daemon.clock import SystemClock
from daemon.config import KafkaSettings
from daemon.ingest.history import DeployHistoryStore
from daemon.sources.kafka import BATCH_SIZE, DeployConsumer
from daemon.store.db import Store
from tests.deploy_events import fill

BATCH = 100
TARGET = 0.8


async def raw(bootstrap: str, topic: str, count: int, batch_size: int = BATCH) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_size,
    )
    await consumer.start()
    try:
        seen = 0
        first: float | None = None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=batch_size)
            for tp, records in batch.items():
                if records and first is None:
                    first = time.perf_counter()
                for record in records:
                    orjson.loads(record.value)  # at least look at what arrived
                seen += len(records)
                if records:
                    await consumer.commit({tp: records[-1].offset + 1})
        assert first is not None
        return (seen - 1) / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def rollbackd(bootstrap: str, topic: str, count: int, workdir: Path) -> tuple[float, int, int]:
    db = workdir / f"kafka-{uuid.uuid4().hex[:8]}.sqlite"
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.upgrade()
    clock = SystemClock()
    settings = KafkaSettings(
        enabled=True, bootstrap_servers=bootstrap, deploy_topic=topic, group_id=f"rb-{uuid.uuid4().hex[:8]}"
    )
    consumer = DeployConsumer(settings, DeployHistoryStore(store), clock)
    try:
        await consumer.start()
        deadline = time.monotonic() + 600
        while consumer.processed == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("DeployConsumer read nothing in 600 s")
            await asyncio.sleep(0.002)
        first, at_first = time.perf_counter(), consumer.processed
        while consumer.processed < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"DeployConsumer processed {consumer.processed} of {count}")
            await asyncio.sleep(0.002)
        rate = (count - at_first) / (time.perf_counter() - first)
    finally:
        await consumer.stop()
        await store.close()
    with sqlite3.connect(db) as conn:
        inbox = int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
        history = int(conn.execute("SELECT count(*) FROM deploy_history").fetchone()[0])
    return rate, inbox, history


async def run(runs: int, count: int, workdir: Path) -> dict[str, Any]:
    from tests.stack.kafka import Kafka  # noqa: PLC0415 - the stack is a test utility

    kafka = Kafka(workdir / "kafka")
    await asyncio.to_thread(kafka.start)
    raw_rates: list[float] = []
    rb_rates: list[float] = []
    raw_same_batch: list[float] = []
    try:
        topic = f"deployments-{uuid.uuid4().hex[:8]}"
        await fill(kafka.bootstrap, topic, count)
        await raw(kafka.bootstrap, topic, count)  # warm-up: broker page cache, imports
        for _ in range(runs):
            raw_rates.append(await raw(kafka.bootstrap, topic, count))
            rate, inbox, history = await rollbackd(kafka.bootstrap, topic, count, workdir)
            if inbox != 0 or history != count:
                raise RuntimeError(f"stored {inbox} inbox rows and {history} history rows of {count} events")
            rb_rates.append(rate)
            raw_same_batch.append(await raw(kafka.bootstrap, topic, count, BATCH_SIZE))
    finally:
        await asyncio.to_thread(kafka.stop)
    rb, base = median(rb_rates), median(raw_rates)
    return {
        "benchmark": "kafka",
        "unit": "events/s",
        "events_per_run": count,
        "runs": runs,
        "rollbackd_stored": summary(rb_rates),
        "raw_aiokafka": summary(raw_rates),
        "batch_sizes": {"raw_aiokafka": BATCH, "rollbackd": BATCH_SIZE},
        "raw_aiokafka_at_rollbackd_batch_size": summary(raw_same_batch),
        "ratio_vs_raw": ratio(rb, base),
        "target_ratio_vs_raw": TARGET,
        "met": rb >= TARGET * base,
        "stored_rows_checked": True,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    # 20 of rollbackd's batches: fewer make the timed window (first record to last) a few batches long.
    parser.add_argument("--events", type=int, default=10000)
    args = parser.parse_args(argv)
    quiet()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        result = asyncio.run(run(args.runs, args.events, Path(tmp)))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
