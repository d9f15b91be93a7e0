"""``rollbackd replay --kafka``: a topic range of the real Kafka, through the rules, in dry run."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner, Result

from daemon.cli.replay import replay
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "docs" / "examples" / "replay.jsonl"


async def _topic_with_sample(kafka: Kafka) -> tuple[str, int]:
    """A new topic: offset 0 is garbage (outside the replayed range), then the sample's records."""
    topic = f"replay-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    lines = [line for line in SAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not a record")
        for line in lines:
            await producer.send_and_wait(topic, line.encode())
    finally:
        await producer.stop()
    return topic, len(lines)


async def _replay(*args: str) -> Result:
    # replay runs its own event loop (asyncio.run), so it gets a thread of its own.
    return await asyncio.to_thread(CliRunner().invoke, replay, [*args, "--rules", str(REPO / "rules")])


def _without_ids(items: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in item.items() if k != "incident"} for item in items]


async def test_topic_range_gives_the_same_decisions_as_the_file(kafka: Kafka) -> None:
    topic, count = await _topic_with_sample(kafka)
    result = await _replay("--kafka", kafka.bootstrap, "--topic", topic, "--from-offset", "1", "--output", "json")
    assert result.exit_code == 0, result.output
    from_kafka = json.loads(result.stdout)
    from_file = json.loads((await _replay(str(SAMPLE), "--output", "json")).stdout)
    assert from_kafka["records"] == 10
    # Incident ids are new in every run (the live code draws them); everything else must agree.
    assert _without_ids(from_kafka["decisions"]) == _without_ids(from_file["decisions"])
    assert _without_ids(from_kafka["rollbacks"]) == _without_ids(from_file["rollbacks"])
    assert len(from_kafka["decisions"]) == 3

    # Stop before the last record (search's error rate clearing): that incident stays open.
    last = str(count - 1)  # offsets 1..count hold the sample; leave out offset `count`
    result = await _replay(
        "--kafka", kafka.bootstrap, "--topic", topic, "--from-offset", "1", "--to-offset", last, "--output", "json"
    )
    assert result.exit_code == 0, result.output
    states = {i["decision"]["rule"]: i["state"] for i in json.loads(result.stdout)["incidents"]}
    assert states["ApplicationErrorRate"] == "open"


async def test_a_bad_message_in_range_names_its_offset(kafka: Kafka) -> None:
    topic, _ = await _topic_with_sample(kafka)
    result = await _replay("--kafka", kafka.bootstrap, "--topic", topic, "--from-offset", "0", "--to-offset", "2")
    assert result.exit_code == 2
    assert f"{topic}[0]@0: not JSON" in result.stderr


async def test_a_missing_partition_is_a_clear_error(kafka: Kafka) -> None:
    topic, _ = await _topic_with_sample(kafka)
    result = await _replay("--kafka", kafka.bootstrap, "--topic", topic, "--partition", "5")
    assert result.exit_code == 2
    assert f"topic {topic!r} has no partition(s) [5]" in result.stderr
