"""Deploy events in every compression codec a producer uses, and batches that cannot be decoded.

The matrix is produced by the official Java client (``tests/stack/java``), as a
CI pipeline on the JVM publishes: one batch per codec (none, gzip, snappy, lz4,
zstd), then one uncompressed event; the broker's own ``DumpLogSegments`` shows
each batch stored in its codec. ``DeployConsumer`` stores all of them and the
shipped rules correlate an alert on each deployment with its deploy.

An undecodable batch (the codec library missing, simulated by taking cramjam
away from aiokafka's codec module, which is how aiokafka decides whether it
has one) goes to the dead-letter topic record by record, and the event after
it is still stored; with no dead-letter topic the records are skipped,
counted and logged, and the consumer still goes on.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiokafka.codec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import UnsupportedCodecError
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from daemon.clock import SystemClock
from daemon.config import KafkaSettings
from daemon.ingest import DeployHistoryStore
from daemon.metrics import REGISTRY
from daemon.model import Target
from daemon.pipeline import HISTORY_WINDOW
from daemon.rules import RuleRegistry
from daemon.sources.alertmanager import parse_webhook
from daemon.sources.kafka import REASON_HEADER, DeployConsumer
from daemon.store.db import Store
from tests.daemon_process import SHIPPED_RULES
from tests.integration.test_ingest_kafka import committed, dead_letters, wait_processed
from tests.metrics_util import delta, samples
from tests.stack import java_producer
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration


def _event(event_id: str, deployment: str, at: datetime) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "event_id": event_id,
            "type": "succeeded",
            "service": deployment,
            "namespace": "shop",
            "deployment": deployment,
            "revision": 7,
            "image": f"registry/{deployment}:7",
            "migration": False,
            "timestamps": {"occurred_at": at.isoformat().replace("+00:00", "Z")},
        }
    ).encode()


def _settings(kafka: Kafka, *, dlq: bool = True) -> KafkaSettings:
    suffix = uuid.uuid4().hex[:8]
    return KafkaSettings(
        enabled=True,
        bootstrap_servers=kafka.bootstrap,
        deploy_topic=f"codecs-{suffix}",
        dead_letter_topic=f"codecs-{suffix}.dlq" if dlq else None,
        group_id=f"rollbackd-{suffix}",
    )


def _service_down(deployment: str, at: datetime) -> Any:
    """An Alertmanager webhook's ServiceDown alert on ``shop/<deployment>``, parsed by the real edge parser."""
    payload = {
        "version": "4",
        "groupKey": "{}:{alertname=\"ServiceDown\"}",
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {"alertname": "ServiceDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ServiceDown", "namespace": "shop", "deployment": deployment},
                "annotations": {},
                "startsAt": at.isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus",
                "fingerprint": uuid.uuid4().hex[:16],
            }
        ],
    }
    (alert,) = parse_webhook(json.dumps(payload)).alerts
    return alert


async def test_every_codec_of_the_java_client_is_stored_and_correlated(kafka: Kafka, store: Store) -> None:
    cfg = _settings(kafka)
    at = datetime.now(UTC) - timedelta(minutes=5)
    events = [(codec, f"checkout-{codec}", _event(f"java-{codec}", f"checkout-{codec}", at)) for codec in
              java_producer.CODECS]  # fmt: skip
    events.append(("none", "checkout-after", _event("java-after", "checkout-after", at)))
    sent = java_producer.send(kafka, cfg.deploy_topic, events)
    assert [codec for codec, _, _ in sent] == [*java_producer.CODECS, "none"]
    # each event is a batch of its own, stored compressed as the Java client compressed it
    assert kafka.batch_codecs(cfg.deploy_topic) == [(offset, offset, codec) for codec, _, offset in sent]
    history = DeployHistoryStore(store)
    async with DeployConsumer(cfg, history, SystemClock()) as consumer:
        await wait_processed(consumer, len(events))
        assert consumer.restarts == 0
    rules = RuleRegistry(SHIPPED_RULES, SystemClock())
    rules.load()
    for codec, deployment, _ in events:
        alert = _service_down(deployment, at + timedelta(minutes=2))
        snap = await history.snapshot([alert.target], None, alert.starts_at - HISTORY_WINDOW)
        assert [e.event_id for e in snap.events] == [f"java-{codec}" if deployment != "checkout-after" else
                                                     "java-after"]  # fmt: skip
        (decision,) = rules.current.evaluate(alert, snap)
        assert decision.rule == "service-completely-down"
        assert decision.deploy is not None, codec
        assert decision.deploy.event_id == snap.events[0].event_id
    assert await committed(kafka, cfg) == {TopicPartition(cfg.deploy_topic, 0): len(events)}


async def _produce_lz4_then_plain(kafka: Kafka, topic: str) -> datetime:
    """Two lz4-compressed events in one batch, then one uncompressed event (the issue's topic)."""
    at = datetime.now(UTC) - timedelta(minutes=1)
    lz4 = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, compression_type="lz4", linger_ms=200)
    await lz4.start()
    try:
        batch = [await lz4.send(topic, _event(f"lz4-{i}", "checkout-web", at)) for i in range(2)]
        await lz4.flush()
        offsets = [(await f).offset for f in batch]
    finally:
        await lz4.stop()
    plain = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await plain.start()
    try:
        last = await plain.send_and_wait(topic, _event("plain-after", "checkout-web", at))
    finally:
        await plain.stop()
    assert (offsets, last.offset) == ([0, 1], 2)
    return at


async def _fetch_until_error(consumer: AIOKafkaConsumer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=500)


async def _plain_aiokafka_cannot_read(kafka: Kafka, topic: str) -> None:
    """Without the codec library aiokafka itself fails on the topic: the batch really is lz4 and undecodable."""
    check = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await check.start()
    try:
        with pytest.raises(UnsupportedCodecError, match="lz4"):
            await _fetch_until_error(check)
    finally:
        await check.stop()


async def test_an_undecodable_batch_is_dead_lettered_and_the_next_event_is_stored(
    kafka: Kafka, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _settings(kafka)
    at = await _produce_lz4_then_plain(kafka, cfg.deploy_topic)
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)  # lz4's library is missing now
    await _plain_aiokafka_cannot_read(kafka, cfg.deploy_topic)
    before = samples(generate_latest(REGISTRY).decode())
    history = DeployHistoryStore(store)
    async with DeployConsumer(cfg, history, SystemClock()) as consumer:
        await wait_processed(consumer, 3)
        assert consumer.restarts == 0
    snap = await history.snapshot([Target("shop", "checkout-web")], None, at - timedelta(hours=1))
    assert [e.event_id for e in snap.events] == ["plain-after"]
    letters = await dead_letters(kafka, str(cfg.dead_letter_topic), 2)
    assert [dict(r.headers)["x-rollbackd-original-offset"] for r in letters] == [b"0", b"1"]
    assert {dict(r.headers)[REASON_HEADER] for r in letters} == {b"undecodable"}
    assert b"lz4" in dict(letters[0].headers)["x-rollbackd-error"]
    after = samples(generate_latest(REGISTRY).decode())
    assert delta(before, after, "rollbackd_deploy_events_total", outcome="dead_lettered") == 2
    assert await committed(kafka, cfg) == {TopicPartition(cfg.deploy_topic, 0): 3}


async def test_without_a_dead_letter_topic_undecodable_records_are_skipped_counted_and_logged(
    kafka: Kafka, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _settings(kafka, dlq=False)
    at = await _produce_lz4_then_plain(kafka, cfg.deploy_topic)
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    before = samples(generate_latest(REGISTRY).decode())
    history = DeployHistoryStore(store)
    with capture_logs() as logs:
        async with DeployConsumer(cfg, history, SystemClock()) as consumer:
            await wait_processed(consumer, 3)
    snap = await history.snapshot([Target("shop", "checkout-web")], None, at - timedelta(hours=1))
    assert [e.event_id for e in snap.events] == ["plain-after"]
    skipped = [e for e in logs if e["event"].startswith("deploy event SKIPPED")]
    assert [(e["topic"], e["partition"], e["offset"], e["reason"]) for e in skipped] == [
        (cfg.deploy_topic, 0, 0, "undecodable"),
        (cfg.deploy_topic, 0, 1, "undecodable"),
    ]
    after = samples(generate_latest(REGISTRY).decode())
    assert delta(before, after, "rollbackd_deploy_events_total", outcome="skipped") == 2
    assert await committed(kafka, cfg) == {TopicPartition(cfg.deploy_topic, 0): 3}
