"""The pipeline end to end on a real store: an alert's target decides which deploy it is blamed on.

The alert enters at the edge (the Alertmanager webhook parser), goes through the
inbox, the dispatcher and the pipeline to the rules; the deploy was written by
the real ``DeployHistoryStore``. Only the cluster is a fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.clock import FakeClock
from daemon.deploys import DeployEvent, DeployKind
from daemon.incidents.service import IncidentService
from daemon.ingest import Dispatcher, Inbox, InboxClaims
from daemon.ingest.history import DeployHistoryStore
from daemon.model import NO_APPROVAL, Decision
from daemon.pipeline import Pipeline
from daemon.rules import RuleRegistry
from daemon.sources.alertmanager import parse_webhook
from daemon.store.db import Store
from tests.unit.incidents.conftest import FakeExecutor

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)

RULES = """\
apiVersion: rollbackd/v1
roles: [Engineering Lead]
channels:
  slack: {slack: "#alerts"}
routing:
  P2: [slack]
decisions:
  - name: errors-after-deploy
    match: ['alertname="ErrorRate"']
    severity: P2
    action: notify
    correlate: {within: 1h, required: true}
  - name: gateway-errors-after-deploy
    match: ['alertname="GatewayErrors"']
    severity: P2
    action: notify
    correlate: {within: 1h, required: true}
    targets: [edge/gateway]
"""


def decided(decision: Decision | Mapping[str, Any]) -> dict[str, Any]:
    """The decision as JSON, whether the incident record holds it typed or as its JSON form."""
    return decision.to_json() if isinstance(decision, Decision) else dict(decision)


def webhook(labels: Mapping[str, str], name: str = "ErrorRate") -> bytes:
    """An Alertmanager webhook body (version 4) with one firing alert."""
    alert = {"status": "firing", "labels": {"alertname": name, **labels}, "startsAt": T0.isoformat()}
    return json.dumps(
        {"version": "4", "status": "firing", "receiver": "rollbackd", "groupKey": "{}", "alerts": [alert]}
    ).encode()


def deploy(namespace: str, deployment: str) -> DeployEvent:
    return DeployEvent(
        event_id=f"deploy-{namespace}-{deployment}",
        kind=DeployKind.SUCCEEDED,
        service="checkout-svc",
        namespace=namespace,
        deployment=deployment,
        at=T0 - timedelta(minutes=10),
        revision=7,
        version="v7",
    )


async def handle(store: Store, tmp_path: Path, body: bytes, *deploys: DeployEvent) -> list[tuple[str, dict[str, Any]]]:
    """Record ``deploys``, accept the webhook ``body``, run the dispatcher until idle: (rule, decision) per incident."""
    clock = FakeClock(T0)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    registry = RuleRegistry([rules_file], clock)
    registry.load()
    history = DeployHistoryStore(store)
    for event in deploys:
        assert await history.record(event)
    incidents = IncidentService(store, clock, [], FakeExecutor(), manual_rollback=lambda: NO_APPROVAL)
    inbox = Inbox(store, clock)
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), Pipeline(registry, history, incidents), clock)
    await inbox.accept_alerts(parse_webhook(body).alerts)
    run = asyncio.create_task(dispatcher.run())
    try:
        await dispatcher.wait_idle()
        return [(v.rule, decided(v.decision)) for v in await incidents.list()]
    finally:
        await dispatcher.stop()
        await run
        await incidents.close()


@pytest.mark.parametrize(
    ("labels", "deployed"),
    [
        ({"deployment": "checkout"}, ("default", "checkout")),  # no namespace label: kubectl's default
        ({"namespace": "shop", "deployment": "checkout"}, ("shop", "checkout")),
    ],
    ids=["no-namespace", "namespace"],
)
async def test_alert_correlates_with_the_deploy_of_its_target(
    store: Store, tmp_path: Path, labels: dict[str, str], deployed: tuple[str, str]
) -> None:
    event = deploy(*deployed)
    elsewhere = deploy("other", "checkout")  # the same name in another namespace: not this alert's workload
    incidents = await handle(store, tmp_path, webhook(labels), event, elsewhere)
    assert [rule for rule, _ in incidents] == ["errors-after-deploy"]  # "correlate: required" matched
    [(_, decision)] = incidents
    assert decision["deploy"]["event_id"] == event.event_id
    assert decision["targets"] == ["/".join(deployed)]


async def test_alert_naming_no_workload_correlates_with_the_rules_fixed_target(store: Store, tmp_path: Path) -> None:
    event = deploy("edge", "gateway")
    incidents = await handle(store, tmp_path, webhook({"env": "prod"}, "GatewayErrors"), event, deploy("x", "y"))
    assert [rule for rule, _ in incidents] == ["gateway-errors-after-deploy"]
    [(_, decision)] = incidents
    assert decision["deploy"]["event_id"] == event.event_id
    assert decision["targets"] == ["edge/gateway"]
