"""A burst of 10,000 deployment events while Alertmanager keeps sending: no webhook is turned away.

``rollbackd run`` runs as a real process (``--store`` SQLite or PostgreSQL)
with Kafka enabled. Its deploy topic holds a backlog of 10,000 deployment
events when it starts (a CI system catching up, or rollbackd back from an
outage), so its consumer reads them as fast as it can. Meanwhile 16 clients,
one connection each, post Alertmanager webhooks (distinct alerts) until the
deploy history holds all 10,000 events. Every webhook status is counted:
deploy events have their own store and dedupe, so none of them may take up
the alert inbox's bound (10,000 unprocessed rows) and turn an alert away.

Two roles:
- ``leader``: a single replica, its dispatcher draining the inbox as it fills;
- ``standby``: leader election on and the Lease held by another replica (a
  failover in progress), so nothing drains the inbox during the burst — a
  standby still accepts webhooks and consumes its share of deploy events. Here
  a deploy event that went through the inbox would stay there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from daemon.store.db import Store
from daemon.store.tables import DeployRow
from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.deploy_events import fill
from tests.fixtures import rules_file
from tests.stack.kafka import Kafka
from tests.stack.kube import KubeCluster
from tests.webhooks import webhook_body

pytestmark = [pytest.mark.fault, pytest.mark.integration]

BURST = 10_000
CLIENTS = 16
ALERTS_PER_WEBHOOK = 2
# Between one client's webhooks: ~30 webhooks/s in all, a busy Alertmanager, yet slow enough that the
# alerts alone stay far below the inbox bound while a standby leaves them unprocessed.
PAUSE_S = 0.5
DEADLINE_S = 180.0
# Alerts that no rule acts on: the load is the inbox and the dispatcher, not rollbacks.
async def _store_url(request: pytest.FixtureRequest, store_backend: str, tmp_path: Path) -> str:
    if store_backend == "postgres":
        return str(await request.getfixturevalue("postgres").new_database())
    return f"sqlite+aiosqlite:///{tmp_path / 'daemon' / 'rollbackd.sqlite'}"


def _standby(kube: KubeCluster, namespace: str) -> dict[str, object]:
    """Leader election settings whose Lease another replica holds, freshly renewed, for an hour."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = f"""\
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: rollbackd-burst, namespace: {namespace}}}
spec: {{holderIdentity: replica-away, leaseDurationSeconds: 3600, acquireTime: "{now}", renewTime: "{now}"}}
"""
    kube.kubectl("apply", "-f", "-", stdin=lease)
    return {"enabled": True, "namespace": namespace, "lease_name": "rollbackd-burst"}


async def _client(url: str, run: str, client: int, stop: asyncio.Event, statuses: Counter[int]) -> None:
    """One Alertmanager connection: a webhook of new alerts, a pause, again, until ``stop``."""
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            start = (client * 1_000_000) + sent * ALERTS_PER_WEBHOOK
            body = webhook_body(run, start, ALERTS_PER_WEBHOOK, datetime.now(UTC))
            resp = await http.post("/webhooks/alertmanager", content=body, headers=headers)
            statuses[resp.status_code] += 1
            sent += 1
            await asyncio.sleep(PAUSE_S)


async def _counts(store: Store) -> tuple[int, int]:
    """Deploy history rows, and inbox rows that are not alerts (deploy events in the alert inbox)."""
    async with store.transaction() as s:
        history = int((await s.scalar(select(func.count()).select_from(DeployRow))) or 0)
        strays = int((await s.scalar(text("SELECT count(*) FROM inbox WHERE kind <> 'alert'"))) or 0)
    return history, strays


@pytest.mark.parametrize("role", ["leader", "standby"])
async def test_a_deploy_burst_turns_no_alert_webhook_away(
    kafka: Kafka, tmp_path: Path, store_backend: str, request: pytest.FixtureRequest, role: str
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"deploys-burst-{run}"
    await fill(kafka.bootstrap, topic, BURST)
    rules = rules_file("notify", tmp_path / "rules", alertname="NeverSent")
    url = await _store_url(request, store_backend, tmp_path)
    kafka_cfg = {
        "enabled": True, "bootstrap_servers": kafka.bootstrap, "deploy_topic": topic, "group_id": f"rb-{run}",
        "decisions_topic": None,
    }  # fmt: skip
    extra: dict[str, object] = {"kafka": kafka_cfg, "store": {"url": url}}
    kubeconfig = None
    if role == "standby":
        kube: KubeCluster = request.getfixturevalue("kube")
        kubeconfig = kube.kubeconfig
        election = await asyncio.to_thread(_standby, kube, request.getfixturevalue("namespace"))
        extra["kubernetes"] = {"leader_election": election}
    daemon = DaemonProcess(tmp_path / "daemon", rules=[rules], kubeconfig=kubeconfig, extra=extra)
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    store = Store(url)
    try:
        await asyncio.to_thread(daemon.start)
        began = time.monotonic()
        clients = [asyncio.create_task(_client(daemon.url, run, i, stop, statuses)) for i in range(CLIENTS)]
        first, _ = await _counts(store)
        history = strays = 0
        while time.monotonic() - began < DEADLINE_S:
            await asyncio.sleep(0.5)
            history, strays = await _counts(store)
            if history >= BURST:
                break
        consumed_s = time.monotonic() - began
        stop.set()
        await asyncio.gather(*clients)
    finally:
        stop.set()
        daemon.stop()
        await store.close()
    print(
        f"\ndeploy burst ({role}): {history} events stored in {consumed_s:.1f}s while {CLIENTS} clients posted "
        f"{sum(statuses.values())} webhooks: {dict(sorted(statuses.items()))}; {strays} deploy rows in the inbox"
    )
    assert first < BURST, "the burst was consumed before the webhooks began: nothing was measured"
    assert history == BURST, f"deploy history holds {history} of {BURST}\n{daemon.log_tail(30)}"
    assert sum(statuses.values()) > 0
    assert statuses[503] == 0, f"{statuses[503]} webhooks turned away with 503 during the burst"
    assert set(statuses) == {200}, f"webhook statuses {dict(statuses)}\n{daemon.log_tail(30)}"
    assert strays == 0
