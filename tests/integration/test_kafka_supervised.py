"""The deploy consumer cannot die silently: killed, it is restarted, counted and shown on ``/readyz`` meanwhile.

A whole rollbackd runs in-process with Kafka enabled on the session's broker
(no cluster: dry-run). The test kills the consumer's task (``asyncio``'s
cancel, from outside, as a crash of the loop would end it) and polls
``/readyz`` every 50 ms: within the restart's 1 s backoff the consumer is
reported ``restarting`` with why (and ``rollbackd_kafka_consumer_up`` is 0),
then ``running`` again, ``rollbackd_kafka_consumer_restarts`` rose by one, and
a deployment event produced after the kill reaches the deploy history.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from daemon.app import Daemon
from daemon.model import Target
from tests.daemon_process import SHIPPED_RULES
from tests.harness import daemon_settings
from tests.metrics_util import delta, samples, value
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration

CONSUMER = "kafka-deploy-consumer"
BOUND_S = 30.0


def _event(event_id: str) -> bytes:
    at = (datetime.now(UTC) - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "schema_version": 1, "event_id": event_id, "type": "succeeded", "service": "checkout",
            "namespace": "shop", "deployment": "checkout-web", "revision": 3, "image": "registry/checkout:3",
            "migration": False, "timestamps": {"occurred_at": at},
        }
    ).encode()  # fmt: skip


async def _produce(kafka: Kafka, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _until(what: str, check: Callable[[], Any], bound_s: float = BOUND_S, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(every_s)
    raise AssertionError(f"not within {bound_s}s: {what}")


async def test_a_killed_consumer_is_restarted_counted_and_shown_on_readyz(tmp_path: Path, kafka: Kafka) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic = f"supervised-{suffix}"
    settings = daemon_settings(
        tmp_path, list(SHIPPED_RULES),
        kafka={"enabled": True, "bootstrap_servers": kafka.bootstrap, "deploy_topic": topic,
               "dead_letter_topic": f"{topic}.dlq", "group_id": f"rollbackd-{suffix}", "decisions_topic": None},
    )  # fmt: skip
    async with Daemon(settings) as daemon, httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as http:
        history = daemon.components.history
        target = Target("shop", "checkout-web")
        since = datetime.now(UTC) - timedelta(hours=1)

        async def source() -> dict[str, Any]:
            body = (await http.get("/readyz")).json()
            return dict(body.get("sources", {}).get(CONSUMER, {}))

        async def stored(event_id: str) -> bool:
            return event_id in [e.event_id for e in (await history.snapshot([target], None, since)).events]

        async def running() -> bool:
            return (await source()).get("state") == "running"

        await _produce(kafka, topic, _event(f"before-{suffix}"))
        await _until("the first event stored", lambda: stored(f"before-{suffix}"))
        async def caught_up() -> bool:
            s = await source()
            return s.get("state") == "running" and s.get("lag") == 0 and s.get("restarts") == 0

        await _until("the consumer running with no lag", caught_up)
        before = samples((await http.get("/metrics")).text)

        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == CONSUMER]
        task.cancel()  # killed: nothing in the consumer asked for it

        async def restarting() -> dict[str, Any] | None:
            s = await source()
            return s if s.get("state") == "restarting" else None

        # The restart waits out a 1 s backoff: /readyz, polled every 50 ms, must show it meanwhile.
        seen = await _until("/readyz showing the consumer restarting", restarting, bound_s=5.0)
        assert (seen["restarts"], seen["error"]) == (1, "its task was cancelled")
        down = samples((await http.get("/metrics")).text)
        assert value(down, "rollbackd_kafka_consumer_up", consumer=CONSUMER) == 0
        await _until("the consumer running again", running)
        after = samples((await http.get("/metrics")).text)
        assert delta(before, after, "rollbackd_kafka_consumer_restarts_total", consumer=CONSUMER) == 1
        assert (await http.get("/readyz")).status_code == 200  # alerts are still accepted meanwhile

        await _produce(kafka, topic, _event(f"after-{suffix}"))
        await _until("the event after the kill stored", lambda: stored(f"after-{suffix}"))
