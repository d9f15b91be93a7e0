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

import pytest

from daemon.clock import FakeClock
from daemon.incidents.service import IncidentService
from daemon.ingest import Dispatcher, Inbox, InboxClaims
from daemon.ingest.history import DeployHistoryStore
from daemon.model import NO_APPROVAL, DeployEvent, DeployKind
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
"""


def webhook(labels: Mapping[str, str]) -> bytes:
    """An Alertmanager webhook body (version 4) with one firing alert."""
    alert = {"status": "firing", "labels": {"alertname": "ErrorRate", **labels}, "startsAt": T0.isoformat()}
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
    clock = FakeClock(T0)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    registry = RuleRegistry([rules_file], clock)
    registry.load()
    history = DeployHistoryStore(store)
    event = deploy(*deployed)
    assert await history.record(event)
    await history.record(deploy("other", "checkout"))  # same name elsewhere: not this alert's workload
    incidents = IncidentService(store, clock, [], FakeExecutor(), manual_rollback=lambda: NO_APPROVAL)
    inbox = Inbox(store, clock)
    dispatcher = Dispatcher(InboxClaims(inbox, clock, holder="test"), Pipeline(registry, history, incidents), clock)
    await inbox.accept_alerts(parse_webhook(webhook(labels)).alerts)
    run = asyncio.create_task(dispatcher.run())
    try:
        await dispatcher.wait_idle()
        views = await incidents.list()
    finally:
        await dispatcher.stop()
        await run
        await incidents.close()
    assert [v.rule for v in views] == ["errors-after-deploy"]
    decision = views[0].decision
    assert decision["deploy"]["event_id"] == event.event_id
    assert decision["targets"] == ["/".join(deployed)]
