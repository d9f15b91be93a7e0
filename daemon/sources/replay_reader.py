"""Recorded inputs for ``rollbackd replay``: a JSONL file or a Kafka topic range, as timed events.

The edge of the replay path: it turns what was recorded into the same frozen
``Alert`` and ``DeployEvent`` values the live sources produce, with the same
parsers (``sources.alertmanager``, ``sources.deploy_events``), and orders them
by time. Each record (a JSONL line or a Kafka message value) is one of:

- an Alertmanager webhook body (``"version": "4"``): one record per alert;
- a normalized alert (``daemon.model.Alert.to_json()``: ``name``, ``status``, ``fingerprint`` …);
- a deployment event (``daemon/schemas/deploy-event.v1.json``, ``"schema_version": 1``).

A record's time is when it happened: ``timestamps.occurred_at`` for a deploy,
``startsAt`` for a firing alert and ``endsAt`` (or ``startsAt``) for a resolved
one. An optional top-level ``"received_at"`` (RFC 3339) overrides it, for
recordings that kept the arrival time. Lines that are empty or start with
``#`` are skipped. ``aiokafka`` is imported here only, as the layering requires.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.config import KafkaSettings
from daemon.deploys import DeployEvent
from daemon.errors import InputError, TemporaryError
from daemon.model import Alert, AlertStatus
from daemon.sources.alertmanager import parse_webhook
from daemon.sources.common import utc
from daemon.sources.deploy_events import parse_deploy_event
from daemon.target import target_from_labels

MAX_RECORDS = 1_000_000  # a replay holds every record in memory; refuse absurd ranges


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One recorded input: exactly one of ``alert`` and ``deploy``; ``where`` names its origin."""

    at: datetime
    where: str
    alert: Alert | None = None
    deploy: DeployEvent | None = None


def _received_at(document: dict[str, Any], where: str) -> datetime | None:
    raw = document.pop("received_at", None)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(str(raw))
    except ValueError:
        raise InputError(f"{where}: received_at: not an RFC 3339 time: {str(raw)[:64]!r}") from None
    if when.tzinfo is None:
        raise InputError(f"{where}: received_at: time has no UTC offset")
    return utc(when)


def _alert_time(alert: Alert) -> datetime:
    if alert.status is AlertStatus.RESOLVED and alert.ends_at is not None:
        return alert.ends_at
    return alert.starts_at


def _normalized_alert(document: dict[str, Any], where: str) -> Alert:
    try:
        alert = Alert.from_json(document)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{where}: not a normalized alert: {type(exc).__name__}: {exc}") from None
    return Alert(
        name=alert.name,
        status=alert.status,
        labels=alert.labels,
        annotations=alert.annotations,
        starts_at=utc(alert.starts_at),
        ends_at=utc(alert.ends_at) if alert.ends_at else None,
        fingerprint=alert.fingerprint,
        source=alert.source,
        target=target_from_labels(alert.labels),  # this edge decides, as the live ones do
        generator_url=alert.generator_url,
        value=alert.value,
    )


def parse_record(raw: bytes | str, where: str) -> list[ReplayRecord]:
    """The records of one JSONL line or Kafka message; ``InputError`` naming ``where`` otherwise."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{where}: not JSON: {exc}", reason="malformed_json") from None
    if not isinstance(document, dict):
        raise InputError(f"{where}: expected a JSON object, found {type(document).__name__}")
    received = _received_at(document, where)
    try:
        if "schema_version" in document:
            deploy = parse_deploy_event(json.dumps(document).encode())
            return [ReplayRecord(received or deploy.at, where, deploy=deploy)]
        if "version" in document and "alerts" in document:
            batch = parse_webhook(json.dumps(document))
            return [ReplayRecord(received or _alert_time(a), where, alert=a) for a in batch.alerts]
    except InputError as exc:
        raise InputError(f"{where}: {exc}", reason=exc.reason) from None
    if {"name", "status", "fingerprint"} <= document.keys():
        alert = _normalized_alert(document, where)
        return [ReplayRecord(received or _alert_time(alert), where, alert=alert)]
    raise InputError(
        f"{where}: neither an Alertmanager webhook body, a normalized alert nor a deployment event "
        f"(keys: {', '.join(sorted(document)[:8])})",
        reason="unknown_record",
    )


def in_time_order(records: Iterable[ReplayRecord]) -> list[ReplayRecord]:
    """Sorted by time; records at the same instant keep their recorded order (sort is stable)."""
    return sorted(records, key=lambda r: r.at)


def read_file(path: Path) -> list[ReplayRecord]:
    """Every record of a JSONL file, in time order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    records: list[ReplayRecord] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        records.extend(parse_record(text, f"{path}:{number}"))
        if len(records) > MAX_RECORDS:
            raise InputError(f"{path}: more than {MAX_RECORDS} records; replay a smaller range")
    return in_time_order(records)


async def read_kafka(
    kafka: KafkaSettings,
    topic: str,
    *,
    from_offset: int = 0,
    to_offset: int | None = None,
    partitions: Sequence[int] | None = None,
    timeout_s: float = 30.0,
) -> list[ReplayRecord]:
    """Records at offsets ``from_offset..to_offset`` (inclusive; default: up to the end) of ``topic``.

    Reads with no consumer group and commits nothing, so the daemon's own group
    is not disturbed. Every partition (or the given ones) is read over the same
    offset range. ``kafka`` gives the brokers and, as the daemon's own clients
    take them, TLS and SASL.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 - only replay --kafka needs it
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from daemon.sources.kafka_client import connection  # noqa: PLC0415 - it imports aiokafka

    conn = connection(kafka)
    timeout_ms = int(timeout_s * 1000)
    consumer = AIOKafkaConsumer(
        topic,  # subscribing makes start() fetch this topic's metadata; the range is then assigned by hand
        **conn.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=max(timeout_ms, 1000),
    )
    records: list[ReplayRecord] = []
    try:
        await consumer.start()
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise InputError(f"kafka: topic {topic!r} does not exist or has no partitions", reason="no_topic")
        chosen = sorted(known) if partitions is None else list(partitions)
        missing = sorted(set(chosen) - set(known))
        if missing:
            raise InputError(f"kafka: topic {topic!r} has no partition(s) {missing}", reason="no_partition")
        tps = [TopicPartition(topic, p) for p in chosen]
        consumer.unsubscribe()
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            last = ends[tp] - 1 if to_offset is None else min(to_offset, ends[tp] - 1)
            if last < from_offset:
                continue
            consumer.seek(tp, from_offset)
            records.extend(await _read_partition(consumer, tp, last, timeout_ms))
    except KafkaError as exc:
        raise TemporaryError(f"kafka ({conn.describe()}): {type(exc).__name__}: {exc}", reason="kafka") from exc
    finally:
        await consumer.stop()
    return in_time_order(records)


async def _read_partition(consumer: Any, tp: Any, last: int, timeout_ms: int) -> list[ReplayRecord]:
    out: list[ReplayRecord] = []
    position = -1
    while position < last:
        batch = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=500)
        messages = batch.get(tp, [])
        if not messages:
            raise TemporaryError(f"kafka: no message at {tp.topic}[{tp.partition}] after offset {position}")
        for msg in messages:
            position = msg.offset
            if position > last:
                break
            where = f"{tp.topic}[{tp.partition}]@{msg.offset}"
            if msg.value is None:
                raise InputError(f"{where}: empty message value")
            out.extend(parse_record(msg.value, where))
            if len(out) > MAX_RECORDS:
                raise InputError(f"kafka: more than {MAX_RECORDS} records; replay a smaller range")
    return out
