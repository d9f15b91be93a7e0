"""One recorded stream, two runs: a running daemon and ``rollbackd replay`` write the same decision records.

The stream: two deploys of shop/checkout (on Kafka, as a CI/CD pipeline publishes
it), an error alert right after it (a rollback that needs nobody, correlated
with the second deploy, back to the first's revision), the same alert again (Alertmanager HA redelivers), a latency
alert on shop/search that notifies, and its resolution. The daemon gets the
deploy through its Kafka consumer and the alerts through its webhook, with no
cluster (every rollback a dry run); the replay gets the same records as JSONL.
Then every incident's record, as the API serves it, is compared field by field
with the replay's — everything but ids and wall-clock times, which a replay
has in recorded time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from daemon.app import Daemon
from daemon.cli.replay import replay
from daemon.clock import SystemClock
from daemon.model import Target
from tests.harness import TOKENS, bearer, daemon_settings
from tests.stack.kafka import Kafka

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "replay-live.yaml"
_TIME_KEYS = {"at", "opened_at", "updated_at", "closed_at", "acknowledged_at", "due_at", "starts_at"}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _stream(run: str, now: datetime) -> list[dict[str, Any]]:
    """The recorded inputs, in order: two deploy events and four Alertmanager webhook bodies."""
    def deploy(revision: int, minutes_ago: int) -> dict[str, Any]:
        return {
            "schema_version": 1, "event_id": f"deploy-{run}-{revision}", "type": "succeeded",
            "service": "checkout", "namespace": "shop", "deployment": "checkout", "revision": revision,
            "image": f"registry.local/checkout:2.{revision}.0", "version": f"2.{revision}.0", "commit": "0f3c2a9",
            "author": "ci-bot", "migration": False,
            "timestamps": {"occurred_at": _iso(now - timedelta(minutes=minutes_ago))},
        }  # fmt: skip

    def webhook(name: str, labels: dict[str, str], status: str, value: str) -> dict[str, Any]:
        full = {"alertname": name, "run": run, **labels}
        alert = {
            "status": status, "labels": full, "annotations": {"summary": f"{name} on {labels}", "value": value},
            "startsAt": _iso(now - timedelta(minutes=1)),
            "endsAt": _iso(now) if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph",
            "fingerprint": hashlib.sha256(orjson.dumps(full, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16],
        }  # fmt: skip
        return {
            "version": "4", "groupKey": f"{{}}:{{alertname=\"{name}\"}}", "truncatedAlerts": 0, "status": status,
            "receiver": "rollbackd", "groupLabels": {"alertname": name}, "commonLabels": full,
            "commonAnnotations": {}, "externalURL": "http://alertmanager.local", "alerts": [alert],
        }  # fmt: skip

    errors = webhook("ReplayLiveErrors", {"namespace": "shop", "deployment": "checkout"}, "firing", "0.12")
    latency = {"namespace": "shop", "deployment": "search"}
    return [
        deploy(7, 50),
        deploy(8, 3),
        errors,
        errors,  # redelivered
        webhook("ReplayLiveLatency", latency, "firing", "2.5"),
        webhook("ReplayLiveLatency", latency, "resolved", "0.3"),
    ]


def _comparable(record: dict[str, Any]) -> Any:
    """The record without what differs by construction: ids, wall-clock times, the opening alert's arrival."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _TIME_KEYS and k != "id"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(record)


async def _live(tmp_path: Path, kafka: Kafka, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    topic = f"deploys-{uuid.uuid4().hex[:8]}"
    settings = daemon_settings(
        tmp_path, [RULES],
        kafka={"enabled": True, "bootstrap_servers": kafka.bootstrap, "deploy_topic": topic,
               "group_id": f"g-{topic}", "decisions_topic": None},
    )  # fmt: skip
    deploys = [r for r in records if "schema_version" in r]
    webhooks = [r for r in records if "schema_version" not in r]
    async with Daemon(settings, clock=SystemClock()) as daemon:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for event in deploys:
                await producer.send_and_wait(topic, orjson.dumps(event))
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        checkout, since = Target("shop", "checkout"), datetime.now(UTC) - timedelta(hours=1)
        while not (await daemon.components.history.snapshot([checkout], None, since)).events:
            assert time.monotonic() < deadline, "the deploy event never reached the deploy history"
            await asyncio.sleep(0.1)
        base = f"http://127.0.0.1:{daemon.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            for body in webhooks:
                resp = await api.post("/webhooks/alertmanager", json=body, headers=bearer("ingest"))
                assert resp.status_code == 200, resp.text
                await daemon.components.dispatcher.wait_idle()
                await daemon.components.incidents.idle()
            listed = (await api.get("/api/v1/incidents", headers=bearer("read"))).json()["incidents"]
            return [
                (await api.get(f"/api/v1/incidents/{i['id']}", headers=bearer("read"))).json()
                for i in reversed(listed)
            ]


def _replayed(tmp_path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    recording = tmp_path / "recorded.jsonl"
    recording.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = CliRunner().invoke(replay, [str(recording), "--rules", str(RULES), "--output", "json"])
    assert result.exit_code == 0, result.output
    incidents: list[dict[str, Any]] = json.loads(result.stdout)["incidents"]
    return incidents


async def test_replay_writes_the_decision_records_the_daemon_writes(tmp_path: Path, kafka: Kafka) -> None:
    assert TOKENS  # the harness's tokens sign the calls above
    records = _stream(uuid.uuid4().hex[:6], datetime.now(UTC))
    live = await _live(tmp_path / "live", kafka, records)
    replayed = await asyncio.to_thread(_replayed, tmp_path, records)  # the command runs its own event loop
    by_rule = {r["rule"]: r for r in live}
    assert {rule: r["state"] for rule, r in by_rule.items()} == {
        "replay-live-rollback": "resolved", "replay-live-notify": "resolved",
    }  # fmt: skip
    # Both firing alerts carry one start time, so the replay opens both incidents at one recorded instant.
    replayed_by_rule = {r["rule"]: r for r in replayed}
    assert sorted(replayed_by_rule) == sorted(by_rule)
    for rule, mine in by_rule.items():
        ours, theirs = _comparable(mine), _comparable(replayed_by_rule[rule])
        for field in sorted(set(ours) | set(theirs)):
            assert ours.get(field) == theirs.get(field), f"{rule}: {field} differs"
    assert by_rule["replay-live-rollback"]["decision"]["to_revision"] == 7  # the deploy it blamed: 8 → back to 7
    assert by_rule["replay-live-rollback"]["decision"]["deploy"]["revision"] == 8
    assert by_rule["replay-live-rollback"]["actions"][0]["result"] == "dry_run"
    assert len(by_rule["replay-live-rollback"]["alerts"]) == 1  # the redelivery joined nothing
