"""Slack interactivity and PagerDuty webhooks: signatures, identities, and the ack round trip.

The routers run in a FastAPI app whose ``incidents`` is a small fake implementing
``IncidentResponder`` (recording calls; an ack enqueues the Slack/PagerDuty
notification as incidents does); Slack calls go to the loopback Slack server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.clock import FakeClock
from daemon.config import Settings
from daemon.errors import PermanentError
from daemon.incidents.record import IncidentRecord
from daemon.model import NotificationKind
from daemon.notify.outbox import OutboxWorker
from daemon.store.db import Store
from tests.api_app import app_for
from tests.fakes.fixtures import (
    APPROVAL_CODE,
    SIGNING_SECRET,
    SLACK_TOKEN,
    enqueue,
    fake_slack,
    outbox_rows,
    slack_notifier,
)
from tests.fakes.pagerduty_server import sign_webhook, webhook_body
from tests.fakes.records import Lifecycle, lifecycle
from tests.fakes.slack_server import FakeSlack, sign_interaction

pytestmark = pytest.mark.integration
__all__ = ["fake_slack", "lifecycle"]

PD_SECRETS = ("pd-webhook-secret-old-0001", "pd-webhook-secret-new-0002")


class FakeIncidents:
    """Records what responders did; an ack writes the outbox rows like incidents does."""

    def __init__(self, store: Store, clock: FakeClock, records: Lifecycle) -> None:
        self.store, self.clock, self.records = store, clock, records
        self.calls: list[tuple[Any, ...]] = []

    async def get(self, incident_id: str) -> IncidentRecord:
        """The real record of the step this fake is at: approved by ada once she approved, else just opened."""
        approved = any(c[0] == "approve" and c[1] == incident_id for c in self.calls)
        rec = self.records.record(NotificationKind.APPROVED if approved else NotificationKind.OPENED)
        return IncidentRecord.from_json({**rec, "id": incident_id})

    async def acknowledge(self, incident_id: str, actor: str, *, via: str) -> None:
        self.calls.append(("ack", incident_id, actor, via))
        acked = {**self.records.record(NotificationKind.ACKNOWLEDGED), "acknowledged_by": actor}
        await enqueue(self.store, self.clock, incident_id, NotificationKind.ACKNOWLEDGED, acked,
                      outbox_channels=("slack",))  # fmt: skip

    async def approve(self, incident_id: str, approver: str, code: str, *, via: str) -> None:
        if code != APPROVAL_CODE:
            raise PermanentError("approval code does not match", reason="bad_code")
        self.calls.append(("approve", incident_id, approver, via))

    async def reject(self, incident_id: str, approver: str, *, via: str) -> None:
        self.calls.append(("reject", incident_id, approver, via))


@pytest.fixture
def settings(tmp_path: Path, fake_slack: FakeSlack) -> Settings:
    def secret(name: str, value: str) -> dict[str, str]:
        (tmp_path / name).write_text(value)
        return {"file": str(tmp_path / name)}

    return Settings(
        slack={"enabled": True, "token": secret("slack-token", SLACK_TOKEN),
               "signing_secret": secret("slack-signing", SIGNING_SECRET), "base_url": fake_slack.base_url},
        pagerduty={"webhook_secrets": [secret(f"pd{i}", s) for i, s in enumerate(PD_SECRETS)]},
        approvers=[{"name": "ada", "roles": ["engineering_lead"], "slack_user_id": "U0ADA",
                    "pagerduty_user_id": "PADA001"}],
    )  # fmt: skip


@pytest.fixture
def wall_clock() -> FakeClock:
    # Signatures carry wall-clock timestamps; the fake clock starts at the real now.
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def incidents(store: Store, wall_clock: FakeClock, lifecycle: Lifecycle) -> FakeIncidents:
    return FakeIncidents(store, wall_clock, lifecycle)


@pytest.fixture
async def client(settings: Settings, store: Store, wall_clock: FakeClock,
                 incidents: FakeIncidents) -> AsyncIterator[httpx.AsyncClient]:  # fmt: skip
    app = app_for(settings=settings, store=store, clock=wall_clock, incidents=incidents)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rollbackd") as c:
        yield c


def button(verb: str, user: str = "U0ADA", incident: str = "inc1") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "someone"},
        "trigger_id": "1337.42.abcdef",
        "channel": {"id": "C0INCIDENTS", "name": "incidents"},
        "actions": [{"action_id": f"rollbackd:{verb}:{incident}", "value": incident, "type": "button"}],
    }


async def press(client: httpx.AsyncClient, payload: dict[str, Any], *, secret: str = SIGNING_SECRET,
                ts: int | None = None) -> httpx.Response:  # fmt: skip
    body, headers = sign_interaction(secret, payload, ts if ts is not None else int(time.time()))
    return await client.post("/slack/interactivity", content=body, headers=headers)


async def test_forged_and_stale_slack_signatures_are_rejected(client: httpx.AsyncClient, incidents: FakeIncidents,
                                                              wall_clock: FakeClock) -> None:  # fmt: skip
    assert (await press(client, button("ack"), secret="not-the-signing-secret")).status_code == 401
    # Stale by the daemon's clock (the fixtures may take seconds to build on a busy machine).
    stale = int(wall_clock.now().timestamp()) - 301
    assert (await press(client, button("ack"), ts=stale)).status_code == 401
    body, headers = sign_interaction(SIGNING_SECRET, button("ack"), int(time.time()))
    tampered = body.replace(b"U0ADA", b"U0EVE")
    assert (await client.post("/slack/interactivity", content=tampered, headers=headers)).status_code == 401
    assert incidents.calls == []
    assert (await press(client, button("ack"))).status_code == 200
    assert incidents.calls == [("ack", "inc1", "ada", "slack")]


async def test_unmapped_slack_user_is_refused(client: httpx.AsyncClient, incidents: FakeIncidents,
                                              fake_slack: FakeSlack) -> None:  # fmt: skip
    for verb in ("ack", "approve", "reject"):
        assert (await press(client, button(verb, user="U0EVE"))).status_code == 200
    assert incidents.calls == []
    assert fake_slack.views == [], "no approval modal for strangers"
    assert [e["user"] for e in fake_slack.ephemeral] == ["U0EVE"] * 3
    assert all("not authorised" in e["text"] for e in fake_slack.ephemeral)


async def test_approve_opens_a_modal_and_the_code_is_checked(client: httpx.AsyncClient, incidents: FakeIncidents,
                                                             fake_slack: FakeSlack) -> None:  # fmt: skip
    assert (await press(client, button("approve"))).status_code == 200
    [opened] = fake_slack.views
    view = opened["view"]
    assert view["private_metadata"] == "inc1"

    def submit(code: str, user: str = "U0ADA") -> dict[str, Any]:
        state = {"values": {"code": {"code": {"type": "plain_text_input", "value": code}}}}
        return {"type": "view_submission", "user": {"id": user},
                "view": {"callback_id": view["callback_id"], "private_metadata": "inc1", "state": state}}  # fmt: skip

    wrong = await press(client, submit("000000"))
    assert wrong.json()["response_action"] == "errors"
    stranger = await press(client, submit(APPROVAL_CODE, user="U0EVE"))
    assert stranger.json()["response_action"] == "errors"
    ok = await press(client, submit(APPROVAL_CODE))
    assert ok.json() == {"response_action": "clear"}
    assert incidents.calls == [("approve", "inc1", "ada", "slack")]
    assert APPROVAL_CODE not in repr([(c.method, c.args) for c in fake_slack.calls])


async def test_a_second_approve_press_is_answered_already_approved(
    client: httpx.AsyncClient, incidents: FakeIncidents, fake_slack: FakeSlack
) -> None:
    """ada approved through the modal; pressing Approve again opens no modal and says she already did."""
    await incidents.approve("inc1", "ada", APPROVAL_CODE, via="slack")
    assert (await press(client, button("approve"))).status_code == 200
    assert fake_slack.views == [], "no second modal: there is nothing left for ada to approve"
    [told] = fake_slack.ephemeral
    assert told["user"] == "U0ADA"
    assert "You already approved incident inc1 (as engineering_lead" in told["text"]
    assert incidents.calls == [("approve", "inc1", "ada", "slack")]


async def test_forged_pagerduty_signature_is_rejected(client: httpx.AsyncClient, incidents: FakeIncidents) -> None:
    body = webhook_body("incident.acknowledged", dedup_key="rollbackd-inc1")
    forged = await client.post("/pagerduty/webhook", content=body,
                               headers={"X-PagerDuty-Signature": sign_webhook(["guess"], body)})  # fmt: skip
    assert forged.status_code == 401
    missing = await client.post("/pagerduty/webhook", content=body)
    assert missing.status_code == 401
    assert incidents.calls == []


async def test_pagerduty_ack_acknowledges_and_updates_slack(
    client: httpx.AsyncClient, incidents: FakeIncidents, store: Store, wall_clock: FakeClock, fake_slack: FakeSlack,
    lifecycle: Lifecycle,
) -> None:
    worker = OutboxWorker(store, wall_clock, [slack_notifier(fake_slack)])
    await enqueue(store, wall_clock, "inc1", *lifecycle.pairs()[0], outbox_channels=("slack",))
    await worker.run_once()
    [message] = fake_slack.top_level()
    assert "rollbackd:ack:inc1" in str(message.blocks)

    body = webhook_body("incident.acknowledged", dedup_key="rollbackd-inc1", agent_id="PADA001", event_id="EV1")
    # Signed with the new secret only, among several signatures: rotation keeps working.
    headers = {
        "X-PagerDuty-Signature": sign_webhook(["stale", PD_SECRETS[1]], body), "Content-Type": "application/json",
    }  # fmt: skip
    first = await client.post("/pagerduty/webhook", content=body, headers=headers)
    assert first.status_code == 200
    assert first.json()["status"] == "acknowledged"
    again = await client.post("/pagerduty/webhook", content=body, headers=headers)
    assert again.json()["status"] == "duplicate"
    assert incidents.calls == [("ack", "inc1", "ada", "pagerduty")]

    await worker.run_once()
    fields = [f["text"] for b in message.blocks for f in b.get("fields", [])]
    assert "*Acknowledged by*\nada" in fields
    assert "rollbackd:ack:inc1" not in str(message.blocks), "the Acknowledge button is gone"
    assert "Acknowledged by ada" in fake_slack.thread(message.ts)[-1].text
    assert [r.state for r in await outbox_rows(store)] == ["sent", "sent"]


async def test_pagerduty_echo_of_our_own_ack_and_foreign_alerts_are_ignored(
    client: httpx.AsyncClient, incidents: FakeIncidents
) -> None:
    for body in (
        webhook_body("incident.acknowledged", dedup_key="rollbackd-inc1", agent_type="service_reference"),
        webhook_body("incident.acknowledged", dedup_key="someone-elses-alert"),
        webhook_body("incident.triggered", dedup_key="rollbackd-inc1"),
    ):
        resp = await client.post("/pagerduty/webhook", content=body, headers={
            "X-PagerDuty-Signature": sign_webhook([PD_SECRETS[0]], body), "Content-Type": "application/json",
        })  # fmt: skip
        assert resp.json()["status"] == "ignored"
    assert incidents.calls == []
