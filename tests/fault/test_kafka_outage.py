"""The Kafka broker is down: rollbackd starts, decides and rolls back; its events follow once the broker is back.

``rollbackd run`` runs as a real process (``--store`` SQLite or PostgreSQL,
the test cluster's kubeconfig, Kafka enabled with a decisions topic). The
session's broker is stopped before the daemon starts, so start-up, the two
alerts' decisions and the two rollbacks all happen without it. Then the same
broker comes back (same port, same data). Within a bound:
- each incident's ``decision`` then ``action`` event is on the decisions topic,
  in that order, keyed by the incident id;
- the deploy consumer has joined its group by itself: a deployment event
  produced after the return reaches the daemon's deploy history.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from sqlalchemy import func, select

from daemon.sources.deploy_events import validate
from daemon.store.db import Store
from daemon.store.tables import DeployRow
from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.deploy_events import deploy_event
from tests.fixtures import rules_file
from tests.kube_util import deploy_with_history
from tests.stack.kafka import Kafka
from tests.stack.kube import KubeCluster
from tests.webhooks import probe_webhook

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SCHEMA = "decision-event.v1.json"

TARGETS = 2
START_BOUND_S = 30.0  # the daemon answers /healthz with the broker down
ROLLBACK_BOUND_S = 60.0  # both Deployments rolled back and Ready, broker still down
PUBLISH_BOUND_S = 45.0  # from the broker being back to every event on the topic
def _rolled_back(kube: KubeCluster, ns: str, name: str) -> bool:
    dep = kube.kubectl_json("-n", ns, "get", "deployment", name)
    spec, status, meta = dep["spec"], dep.get("status", {}), dep["metadata"]
    return (
        int(meta["annotations"]["deployment.kubernetes.io/revision"]) == 3  # type: ignore[index]
        and spec["template"]["spec"]["containers"][0]["image"].endswith(":v1")  # type: ignore[index]
        and status.get("observedGeneration", 0) >= meta["generation"]  # type: ignore[index, union-attr]
        and status.get("availableReplicas") == spec["replicas"]  # type: ignore[index, union-attr]
    )


async def _store_url(request: pytest.FixtureRequest, store_backend: str, tmp_path: Path) -> str:
    if store_backend == "postgres":
        return str(await request.getfixturevalue("postgres").new_database())
    return f"sqlite+aiosqlite:///{tmp_path / 'daemon' / 'rollbackd.sqlite'}"


async def _read_events(kafka: Kafka, topic: str, wanted: int, deadline: float) -> list[ConsumerRecord[Any, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[ConsumerRecord[Any, Any]] = []
        seen: set[str] = set()
        while len(seen) < wanted and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    found.append(record)
                    seen.add(orjson.loads(record.value)["event_id"])
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def _history_has(url: str, event_id: str, deadline: float) -> bool:
    store = Store(url)
    try:
        while time.monotonic() < deadline:
            async with store.transaction() as s:
                found = await s.scalar(select(func.count()).where(DeployRow.event_id == event_id))
            if found:
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await store.close()


async def _alert_and_roll_back(daemon: DaemonProcess, kube: KubeCluster, namespace: str, names: list[str]) -> set[str]:
    """Post one alert per Deployment; wait until each is rolled back; the incident ids."""
    async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as http:
        began = time.monotonic()
        for name in names:
            resp = await http.post(
                "/webhooks/alertmanager",
                content=probe_webhook(namespace, name),
                headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
            )
            assert resp.status_code == 200, resp.text
        pending = set(names)
        while pending and time.monotonic() - began < ROLLBACK_BOUND_S:
            for name in list(pending):
                if await asyncio.to_thread(_rolled_back, kube, namespace, name):
                    pending.discard(name)
            await asyncio.sleep(0.3)
        assert not pending, f"not rolled back with the broker down: {pending}\n{daemon.log_tail(40)}"
        listed = await http.get("/api/v1/incidents", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return {i["id"] for i in listed.json()["incidents"]}


def _per_incident(records: list[ConsumerRecord[Any, Any]]) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Each incident's events in topic order, copies (same event_id) dropped; and how many copies there were."""
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        event = orjson.loads(record.value)
        validate(SCHEMA, event, "published event")
        assert record.key == event["incident_id"].encode()
        unique.setdefault(event["event_id"], event)  # at least once: a copy carries the same event_id
    by_incident: dict[str, list[dict[str, Any]]] = {}
    for event in unique.values():
        by_incident.setdefault(event["incident_id"], []).append(event)
    return by_incident, len(records) - len(unique)


async def _after_the_return(
    kafka: Kafka, topics: dict[str, str], url: str, run: str
) -> tuple[list[ConsumerRecord[Any, Any]], float, float | None]:
    """The broker is back: the decisions topic's records, when they were all there, when a deploy was stored."""
    back = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics["deploy_topic"], deploy_event(0, run))
    finally:
        await producer.stop()
    records = await _read_events(kafka, topics["decisions_topic"], 2 * TARGETS, back + PUBLISH_BOUND_S)
    publish_s = time.monotonic() - back
    joined = await _history_has(url, f"{run}-0", back + PUBLISH_BOUND_S)
    return records, publish_s, (time.monotonic() - back) if joined else None


@pytest.mark.parametrize("down", ["from_start", "mid_run"])
async def test_a_broker_outage_delays_the_events_but_not_start_up_decisions_or_rollbacks(
    kafka: Kafka,
    kube: KubeCluster,
    namespace: str,
    tmp_path: Path,
    store_backend: str,
    request: pytest.FixtureRequest,
    down: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    names = [f"ko-{i}-{run[:4]}" for i in range(TARGETS)]
    # mid_run: the first rollback (and its events) happen with the broker up, the second without it.
    before, during = (names[:1], names[1:]) if down == "mid_run" else ([], names)
    await asyncio.to_thread(deploy_with_history, kube, namespace, names)
    rules = rules_file("rollback-now", tmp_path / "rules")
    topics = {"deploy_topic": f"deploys-{run}", "decisions_topic": f"decisions-{run}"}
    kafka_cfg = {"enabled": True, "bootstrap_servers": kafka.bootstrap, "group_id": f"rb-{run}", **topics}
    url = await _store_url(request, store_backend, tmp_path)
    daemon = DaemonProcess(
        tmp_path / "daemon", rules=[rules], kubeconfig=kube.kubeconfig, log_level="info",
        extra={"kafka": kafka_cfg, "store": {"url": url}},
    )  # fmt: skip
    try:
        if not before:
            await asyncio.to_thread(kafka.stop)
        began = time.monotonic()
        await asyncio.to_thread(daemon.start, START_BOUND_S)
        start_s = time.monotonic() - began
        if before:
            await _alert_and_roll_back(daemon, kube, namespace, before)
            live = await _read_events(kafka, topics["decisions_topic"], 2, time.monotonic() + PUBLISH_BOUND_S)
            assert len(live) == 2, f"events of the rollback before the outage: {live}"
            await asyncio.to_thread(kafka.stop)
        began = time.monotonic()
        incidents = await _alert_and_roll_back(daemon, kube, namespace, during)
        rollback_s = time.monotonic() - began
        assert len(incidents) == TARGETS
        assert kafka.proc is not None
        assert not kafka.proc.alive(), "the broker was down during these rollbacks"

        await asyncio.to_thread(kafka.start)
        records, publish_s, joined_s = await _after_the_return(kafka, topics, url, run)
    finally:
        daemon.stop()
        if kafka.proc is None or not kafka.proc.alive():
            await asyncio.to_thread(kafka.start)  # the session's other tests need the broker
    by_incident, copies = _per_incident(records)
    joined = "never" if joined_s is None else f"{joined_s:.1f}s"
    print(
        f"\nbroker down {down}: daemon healthy in {start_s:.1f}s, {len(during)} rollback(s) without the broker "
        f"in {rollback_s:.1f}s; broker back: {len(records) - copies} events (+{copies} copies) on the topic "
        f"after {publish_s:.1f}s, deploy consumer storing again after {joined}"
    )
    assert set(by_incident) == incidents, f"events for {set(by_incident)}, incidents {incidents}"
    for incident_id, evs in by_incident.items():
        assert [e["type"] for e in evs] == ["decision", "action"], f"{incident_id}: {evs}"
        decision, action = evs
        assert decision["decision"]["rule"] == "probe-rollback-now"
        assert action["action"]["result"] == "rolled_back"
        assert action["action"]["target"] == decision["decision"]["targets"][0]
    assert joined_s is not None, f"no deploy event stored after the broker came back\n{daemon.log_tail(40)}"
