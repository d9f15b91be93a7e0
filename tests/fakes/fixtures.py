"""Fixtures and helpers for notification tests: the fake servers, real notifiers, outbox rows.

Import the fixtures into a test module (``from tests.fakes.fixtures import fake_slack``)
to use them. The records the rows carry come from the real incident path
(``tests.fakes.records.lifecycle``), never from a hand-written dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from daemon.clock import Clock
from daemon.model import NotificationEvent, NotificationKind, Severity
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.slack import SlackNotifier
from daemon.redact import register_secret
from daemon.store.db import Store
from daemon.store.outbox import enqueue_notification
from daemon.store.tables import OutboxRow
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack
from tests.fakes.tls import TlsFiles, make_self_signed

SLACK_TOKEN = register_secret("xoxb-1111-2222-secretslacktoken")
ROUTING_KEY = register_secret("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
SIGNING_SECRET = register_secret("8f742231b10e8888abcd99yyyzzz85a5")
APPROVAL_CODE = "739184"


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack(SLACK_TOKEN).start()
    yield server
    await server.stop()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_self_signed(tmp_path / "tls")


@pytest.fixture
async def fake_pagerduty(tls: TlsFiles) -> AsyncIterator[FakePagerDuty]:
    server = await FakePagerDuty(tls).start()
    yield server
    await server.stop()


def slack_notifier(server: FakeSlack, *, timeout: int = 5) -> SlackNotifier:
    client = AsyncWebClient(token=SLACK_TOKEN, base_url=server.base_url, timeout=timeout, retry_handlers=[])
    return SlackNotifier(client, default_channel="#incidents", public_url="https://rollbackd.example")


def pagerduty_notifier(
    server: FakePagerDuty, tls: TlsFiles, clock: Clock, *, timeout_s: float = 5.0
) -> PagerDutyNotifier:
    return PagerDutyNotifier(
        {"checkout": ROUTING_KEY},
        base_url=server.base_url,
        ca_file=tls.cert,
        timeout_s=timeout_s,
        public_url="https://rollbackd.example",
        clock=clock,
    )


async def enqueue(store: Store, clock: Clock, incident_id: str, kind: NotificationKind, rec: dict[str, Any],
                  *, channels: tuple[str, ...] = ("slack", "pagerduty:checkout"),
                  outbox_channels: tuple[str, ...] = ("slack", "pagerduty")) -> None:  # fmt: skip
    """Queue ``rec`` (a real record, ``tests.fakes.records``) as incident ``incident_id``'s ``kind`` step."""
    event = NotificationEvent(
        incident_id=incident_id,
        kind=kind,
        severity=Severity.P1,
        summary=f"checkout error rate high ({kind.value})",
        incident={**rec, "id": incident_id},  # one real record stands for several incidents of a test
        channels=channels,
    )
    async with store.transaction() as session:
        await enqueue_notification(session, event, clock.now(), channels=outbox_channels)


async def outbox_rows(store: Store) -> list[OutboxRow]:
    async with store.transaction() as session:
        return list((await session.execute(select(OutboxRow).order_by(OutboxRow.id))).scalars())
