"""Kafka as production runs it: SASL_SSL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) and mutual TLS.

The session broker's secured listeners (``tests.stack.kafka``): a CA made for
this broker, a SCRAM user created by the broker's own storage tool, and an
SSL listener that requires a client certificate. The deploy consumer stores
events produced through them, its dead-letter producer and the decision
publisher write through them, and every secret is a file reference as in a
mounted Secret. Wrong credentials give an error naming the setting, and the
consumer keeps retrying at its backoff while the daemon stays up: no crash
loop. ``rollbackd config check`` refuses unreadable files and unknown
mechanisms, naming the setting.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from click.testing import CliRunner
from structlog.testing import capture_logs

from daemon.app import Daemon
from daemon.cli import main
from daemon.cli.replay import replay
from daemon.cli.status import status as status_command
from daemon.clock import SystemClock
from daemon.config import KafkaSettings, load_settings
from daemon.ingest import DeployHistoryStore
from daemon.model import Target
from daemon.sources.decision_events import HEADER
from daemon.sources.kafka import DeployConsumer
from daemon.sources.kafka_client import connection
from daemon.sources.publisher import KafkaPublisher
from daemon.store.db import Store
from tests.daemon_process import SHIPPED_RULES
from tests.harness import daemon_settings
from tests.integration.test_ingest_kafka import wait_processed
from tests.integration.test_publish_kafka import queue_events
from tests.integration.test_replay_kafka import SAMPLE
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration

SINCE = datetime(2025, 1, 1, tzinfo=UTC)


def _unsecured_jwt(subject: str) -> str:
    """An unsigned JWT, as Kafka's unsecured OAUTHBEARER validator (the broker's default) accepts."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 3600})}."


def _secured(kafka: Kafka, tmp_path: Path, mechanism: str, *, password: str | None = None) -> KafkaSettings:
    """Settings for the SASL_SSL listener, read through ``load_settings`` as the daemon reads its YAML."""
    suffix = uuid.uuid4().hex[:8]
    secret = tmp_path / "kafka-secret"
    if mechanism == "OAUTHBEARER":
        secret.write_text(_unsecured_jwt(kafka.sasl_user))
        sasl: dict[str, Any] = {"mechanism": mechanism, "token": {"file": str(secret)}}
    else:
        secret.write_text(password or kafka.sasl_password)
        sasl = {"mechanism": mechanism, "username": kafka.sasl_user, "password": {"file": str(secret)}}
    kafka_cfg = {
        "enabled": True, "bootstrap_servers": kafka.sasl_bootstrap, "deploy_topic": f"secured-{suffix}",
        "dead_letter_topic": f"secured-{suffix}.dlq", "group_id": f"rollbackd-{suffix}",
        "decisions_topic": f"decisions-{suffix}", "tls": {"ca_file": str(kafka.ca_file)}, "sasl": sasl,
    }  # fmt: skip
    return load_settings(None, kafka=kafka_cfg).kafka


def _event(event_id: str) -> bytes:
    return json.dumps(
        {
            "schema_version": 1, "event_id": event_id, "type": "succeeded", "service": "checkout",
            "namespace": "shop", "deployment": "checkout-web", "revision": 5, "image": "registry/checkout:5",
            "migration": False, "timestamps": {"occurred_at": "2026-01-01T10:00:00Z"},
        }
    ).encode()  # fmt: skip


async def _produce(cfg: KafkaSettings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**connection(cfg).client_kwargs())
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(cfg.deploy_topic, value)
    finally:
        await producer.stop()


async def _read(cfg: KafkaSettings, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, **connection(cfg).client_kwargs(), auto_offset_reset="earliest")
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


async def _consume_and_dead_letter(cfg: KafkaSettings, store: Store) -> None:
    """One good event stored and one poison event dead-lettered, all through ``cfg``'s listener."""
    await _produce(cfg, [_event("secured-1"), b"{not json"])
    history = DeployHistoryStore(store)
    async with DeployConsumer(cfg, history, SystemClock()) as consumer:
        await wait_processed(consumer, 2)
        assert consumer.health().state == "running"
    snap = await history.snapshot([Target("shop", "checkout-web")], None, SINCE)
    assert [e.event_id for e in snap.events] == ["secured-1"]
    (letter,) = await _read(cfg, str(cfg.dead_letter_topic), 1)
    assert letter.value == b"{not json"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER"])
async def test_the_consumer_stores_and_dead_letters_over_sasl_ssl(
    kafka: Kafka, store: Store, tmp_path: Path, mechanism: str
) -> None:
    await _consume_and_dead_letter(_secured(kafka, tmp_path, mechanism), store)


async def test_the_consumer_works_over_mutual_tls(kafka: Kafka, store: Store, tmp_path: Path) -> None:
    assert kafka.client_cert is not None
    suffix = uuid.uuid4().hex[:8]
    cfg = load_settings(
        None,
        kafka={
            "enabled": True, "bootstrap_servers": kafka.ssl_bootstrap, "deploy_topic": f"mtls-{suffix}",
            "dead_letter_topic": f"mtls-{suffix}.dlq", "group_id": f"rollbackd-{suffix}",
            "tls": {"ca_file": str(kafka.ca_file), "cert_file": str(kafka.client_cert.cert),
                    "key_file": str(kafka.client_cert.key)},
        },
    ).kafka  # fmt: skip
    await _consume_and_dead_letter(cfg, store)


async def test_decisions_are_published_over_sasl_ssl(kafka: Kafka, store: Store, tmp_path: Path) -> None:
    cfg = _secured(kafka, tmp_path, "SCRAM-SHA-512")
    queued = await queue_events(store, SystemClock())
    first = queued["inc-0"][0]
    async with KafkaPublisher(cfg, clock=SystemClock()) as publisher:
        await publisher.deliver(first)
    (record,) = await _read(cfg, str(cfg.decisions_topic), 1)
    assert json.loads(record.value) == {k: v for k, v in first.items() if k != "outbox_id"}
    assert dict(record.headers) == dict([HEADER])


async def test_wrong_credentials_name_the_setting_and_the_consumer_retries_without_a_crash_loop(
    kafka: Kafka, store: Store, tmp_path: Path
) -> None:
    cfg = _secured(kafka, tmp_path, "SCRAM-SHA-512", password="not-the-password")
    with capture_logs() as logs:
        async with DeployConsumer(cfg, DeployHistoryStore(store), SystemClock()) as consumer:
            deadline = time.monotonic() + 20
            while consumer.health().state != "failing" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            health = consumer.health()
            assert health.state == "failing"
            assert health.error is not None
            assert "SaslAuthenticationFailed" in health.error
            assert "kafka.sasl.username and kafka.sasl.password" in health.error
            assert "not-the-password" not in health.error
            await asyncio.sleep(3.0)  # a crash loop would restart it (restarts > 0) or hammer the broker
            assert consumer.running
            assert consumer.restarts == 0
            assert consumer.retries <= 3  # backoff 1 s, 2 s, ...: a handful of attempts, not a tight loop
    errors = [e for e in logs if e["log_level"] == "error" and "cannot connect" in e["event"]]
    assert errors
    assert all("not-the-password" not in json.dumps(e, default=str) for e in logs)


async def test_the_daemon_with_wrong_kafka_credentials_stays_up_and_says_why(kafka: Kafka, tmp_path: Path) -> None:
    cfg = _secured(kafka, tmp_path, "SCRAM-SHA-512", password="not-the-password")
    kafka_group = cfg.model_dump(mode="json", exclude_none=True) | {"decisions_topic": None}
    settings = daemon_settings(tmp_path, list(SHIPPED_RULES), kafka=kafka_group)
    async with Daemon(settings) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        deadline = time.monotonic() + 20
        source: dict[str, Any] = {}
        while source.get("state") != "failing" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            ready = await asyncio.to_thread(httpx.get, f"{url}/readyz")
            source = ready.json()["sources"]["kafka-deploy-consumer"]
        assert ready.status_code == 200  # alerts are still accepted
        assert source["state"] == "failing"
        assert "kafka.sasl.password" in source["error"]
        status = await asyncio.to_thread(CliRunner().invoke, status_command, ["--url", url])
        assert "kafka-deploy-consumer: failing" in status.output
        assert "check kafka.sasl.username and kafka.sasl.password" in status.output
        assert "not-the-password" not in status.output
        assert not daemon.stop_event.is_set()  # up, not crashing


async def test_replay_reads_a_topic_range_over_sasl_ssl_with_the_configs_credentials(
    kafka: Kafka, tmp_path: Path
) -> None:
    cfg = _secured(kafka, tmp_path, "SCRAM-SHA-256")
    lines = [line for line in SAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    await _produce(cfg, [line.encode() for line in lines])
    config = tmp_path / "rollbackd.yaml"
    config.write_text(yaml.safe_dump({"kafka": cfg.model_dump(mode="json", exclude_none=True)}))
    args = ["--config", str(config), "--kafka", kafka.sasl_bootstrap, "--topic", cfg.deploy_topic, "--output", "json"]
    result = await asyncio.to_thread(CliRunner().invoke, replay, [*args, "--rules", str(SHIPPED_RULES[0].parent)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == len(lines)


def test_config_check_names_unreadable_files_and_unknown_mechanisms(kafka: Kafka, tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "rollbackd.yaml"
    base: dict[str, Any] = {
        "kafka": {"enabled": True, "bootstrap_servers": kafka.sasl_bootstrap,
                  "tls": {"ca_file": str(tmp_path / "missing-ca.pem")},
                  "sasl": {"mechanism": "SCRAM-SHA-512", "username": "rollbackd",
                           "password": {"file": str(tmp_path / "missing-password")}}},
        "prometheus": {"url": "https://127.0.0.1:1", "tls": {"ca_file": str(kafka.ca_file),
                       "cert_file": str(tmp_path / "missing.pem"), "key_file": str(tmp_path / "missing-key.pem")}},
    }  # fmt: skip
    config.write_text(yaml.safe_dump(base))
    result = runner.invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "kafka.sasl.password" in result.output
    assert "kafka.tls.ca_file" in result.output
    assert "prometheus.tls.cert_file" in result.output

    base["kafka"]["sasl"]["mechanism"] = "SCRAM-SHA-1"
    config.write_text(yaml.safe_dump(base))
    result = runner.invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "kafka.sasl.mechanism" in result.output
    assert "SCRAM-SHA-512" in result.output  # the known ones are listed

    base["kafka"] = {"enabled": True, "bootstrap_servers": kafka.sasl_bootstrap, "tls": {"ca_file": str(kafka.ca_file)},
                     "sasl": {"mechanism": "SCRAM-SHA-512", "username": "rollbackd",
                              "password": {"file": str(tmp_path / "password")}}}  # fmt: skip
    base["prometheus"] = {"url": "https://127.0.0.1:1", "tls": {"ca_file": str(kafka.ca_file)}}
    config.write_text(yaml.safe_dump(base))
    result = runner.invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [  # one line per problem, though two checks read the password
        f"error: kafka.sasl.password: secret file {tmp_path / 'password'} cannot be read: No such file or directory"
    ]

    (tmp_path / "password").write_text("secret\n")
    result = runner.invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
