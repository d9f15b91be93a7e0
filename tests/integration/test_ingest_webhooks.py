"""Alerts from the real Alertmanager and Prometheus land in the durable inbox, once, and survive a crash.

A uvicorn server in the test's event loop runs the webhook router over a real
store. Alertmanager delivers webhooks to it; Prometheus pushes to it as its
alertmanager; duplicates and redeliveries end as one inbox row and one handled
item; a 200 followed by a "kill" is handled by the next dispatcher.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from daemon.clock import SystemClock
from daemon.ingest import Dispatcher, Inbox, InboxClaims, InboxItem
from daemon.metrics import ALERTS_RECEIVED
from daemon.sources.common import fingerprint
from daemon.store.db import Store
from daemon.store.tables import InboxRow
from tests.integration.ingest_server import TOKEN, serve
from tests.stack.exporter import Exporter
from tests.stack.prometheus import Alertmanager, AlertmanagerTarget, Prometheus, WebhookReceiver

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[InboxItem] = []

    async def handle(self, item: InboxItem) -> None:
        self.seen.append(item)


async def rows(store: Store) -> list[InboxRow]:
    async with store.transaction() as s:
        return list((await s.execute(select(InboxRow).order_by(InboxRow.id))).scalars())


async def wait_for(what: str, check: Callable[[], Any], within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.25)
    pytest.fail(f"timed out after {within:.0f}s waiting for {what}")


def post_to_alertmanager(am: Alertmanager, labels: dict[str, str]) -> None:
    body = json.dumps([{"labels": labels, "annotations": {"value": "0.3"}}]).encode()
    response = httpx.post(f"{am.url}/api/v2/alerts", content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()


async def test_alertmanager_webhook_and_redeliveries_make_one_handled_item(
    alertmanager: Alertmanager, store: Store
) -> None:
    clock = SystemClock()
    inbox = Inbox(store, clock)
    name = f"IngestDup{uuid.uuid4().hex[:8]}"
    labels = {"alertname": name, "namespace": "shop", "deployment": "web"}
    async with serve(inbox, clock) as server:
        alertmanager.configure(webhook=WebhookReceiver(f"{server.url}/webhooks/alertmanager", TOKEN))
        await asyncio.to_thread(post_to_alertmanager, alertmanager, labels)
        found = await wait_for("the webhook", lambda: _named(store, name))
        (row,) = found
        # Alertmanager's own fingerprint equals ours for the same label set.
        assert row.payload["fingerprint"] == fingerprint(labels)
        assert row.payload["value"] == 0.3
        assert row.source == "alertmanager"
        # Alertmanager HA sends the same notification twice; so might a retry. Replay it, concurrently.
        replay = _webhook_like(row.payload)
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
            answers = await asyncio.gather(*(client.post("/webhooks/alertmanager", json=replay) for _ in range(5)))
        assert [a.status_code for a in answers] == [200] * 5
        assert sum(a.json()["accepted"] for a in answers) == 0
        handler = Recorder()
        dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), handler, clock)
        task = asyncio.create_task(dispatcher.run())
        await dispatcher.wait_idle()
        await dispatcher.stop()
        await task
    assert len(await _named(store, name)) == 1
    # The shared Alertmanager may still deliver other tests' groups here; ours was handled exactly once.
    assert [i.alert.name for i in handler.seen if i.alert and i.alert.name == name] == [name]


async def test_malformed_webhooks_get_400_and_change_nothing(store: Store) -> None:
    clock = SystemClock()
    async with serve(Inbox(store, clock), clock) as server, httpx.AsyncClient(base_url=server.url, headers=AUTH) as c:
        wrong_version = await c.post("/webhooks/alertmanager", json={"version": "3", "status": "firing", "alerts": []})
        garbage = await c.post(
            "/webhooks/alertmanager", content=b"\x00\x01", headers={"Content-Type": "application/json"}
        )
        bad_type = await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "X"}, "startsAt": 12}])
    assert wrong_version.status_code == garbage.status_code == bad_type.status_code == 400
    assert wrong_version.json()["detail"]["reason"] == "wrong_version"
    assert "0.startsAt" in bad_type.json()["detail"]["message"]
    assert await rows(store) == []


async def test_an_alert_answered_200_survives_a_kill(store: Store) -> None:
    clock = SystemClock()
    body = [{"labels": {"alertname": "Survivor", "namespace": "shop", "deployment": "web"}}]
    async with serve(Inbox(store, clock), clock) as server, httpx.AsyncClient(base_url=server.url, headers=AUTH) as c:
        assert (await c.post("/api/v2/alerts", json=body)).status_code == 200
    # The daemon is gone before anything handled it. A new one starts on the same store.
    restarted = Store(store.url.render_as_string(hide_password=False))
    try:
        handler = Recorder()
        dispatcher = Dispatcher(InboxClaims(Inbox(restarted, clock), clock, holder="test"), handler, clock)
        task = asyncio.create_task(dispatcher.run())
        await dispatcher.wait_idle()
        await dispatcher.stop()
        await task
    finally:
        await restarted.close()
    assert [i.alert.name for i in handler.seen if i.alert] == ["Survivor"]


async def test_prometheus_pointed_at_rollbackd_delivers_like_the_webhook_path(
    prometheus: Prometheus, alertmanager: Alertmanager, exporter: Exporter, store: Store
) -> None:
    clock = SystemClock()
    name = f"IngestPush{uuid.uuid4().hex[:8]}"
    rules = f"""\
groups:
  - name: ingest-test
    rules:
      - alert: {name}
        expr: http_error_ratio{{instance="{exporter.address}"}} > 0.05
        for: 1s
        annotations:
          value: "{{{{ $value }}}}"
"""
    labels = {"namespace": "shop", "deployment": "web"}
    exporter.set("http_error_ratio", 0.5, labels=labels)
    duplicates = ALERTS_RECEIVED.labels(source="alertmanager", outcome="duplicate")
    before = duplicates._value.get()
    async with serve(Inbox(store, clock), clock) as server:
        alertmanager.configure(webhook=WebhookReceiver(f"{server.url}/webhooks/alertmanager", TOKEN))
        # Prometheus sends every alert both straight to rollbackd and to Alertmanager, which forwards it.
        prometheus.configure(
            scrape_targets=[exporter.address],
            rules=rules,
            alertmanagers=[
                AlertmanagerTarget(server.address, path_prefix="/prometheus", bearer_token=TOKEN),
                AlertmanagerTarget(alertmanager.address),
            ],
        )
        try:
            await wait_for("the pushed alert", lambda: _named(store, name), within=90)
            # The same alert through Alertmanager is recognised as the one already in the inbox.
            await wait_for("the routed copy", _async(lambda: duplicates._value.get() > before), within=90)
        finally:
            prometheus.configure(alertmanagers=[], rules="groups: []\n")
    (row,) = await _named(store, name)
    assert row.source == "prometheus"
    assert row.partition_key == "shop/web"
    assert row.payload["status"] == "firing"
    assert row.payload["value"] == pytest.approx(0.5)
    assert row.payload["labels"]["deployment"] == "web"


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return check()

    return run


async def _named(store: Store, name: str) -> list[InboxRow]:
    return [r for r in await rows(store) if r.payload["name"] == name]


def _webhook_like(payload: dict[str, Any]) -> dict[str, Any]:
    """The notification Alertmanager sent, rebuilt from what we stored."""
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": payload["status"],
        "receiver": "webhook",
        "groupLabels": {},
        "commonLabels": payload["labels"],
        "commonAnnotations": payload["annotations"],
        "externalURL": "http://alertmanager",
        "alerts": [
            {
                "status": payload["status"],
                "labels": payload["labels"],
                "annotations": payload["annotations"],
                "startsAt": payload["starts_at"],
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": payload["generator_url"],
                "fingerprint": payload["fingerprint"],
            }
        ],
    }
