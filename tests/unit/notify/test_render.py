"""What responders read: Slack blocks and thread replies, PagerDuty events and routing — from real records.

Every record here was built by the real incident path (``tests.fakes.records``):
a real ``IncidentService`` on a real store, its outbox rows read back.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from daemon.clock import FakeClock
from daemon.errors import PermanentError
from daemon.incidents.service import IncidentService
from daemon.model import ApprovalRequirement, NotificationKind, QuorumMode
from daemon.notify import slack_render
from daemon.notify.notice import Notice
from daemon.notify.pagerduty import PagerDutyNotifier, custom_details, event_action, incident_id_from_dedup_key
from daemon.store.db import Store
from tests.fakes.records import (
    VERIFY_DETAIL,
    Lifecycle,
    VerifyingExecutor,
    approver,
    checkout_alert,
    checkout_decision,
    lifecycle,
)

__all__ = ["lifecycle"]

K = NotificationKind


def notice(kind: NotificationKind, rec: dict[str, Any], channels: tuple[str, ...] = (), sev: str = "P1") -> Notice:
    return Notice.from_payload(
        {
            "incident_id": rec["id"],
            "kind": kind.value,
            "severity": sev,
            "summary": "checkout errors",
            "incident": rec,
            "channels": list(channels),
            "outbox_id": 7,
        }
    )


def flat(blocks: list[dict[str, Any]]) -> str:
    return str(blocks)


def test_message_says_what_broke_why_and_what_it_waits_for(lifecycle: Lifecycle) -> None:
    rec = lifecycle.record(K.OPENED)
    text, blocks = slack_render.main_message(notice(K.OPENED, rec), f"https://r.example/incidents/{rec['id']}")
    assert "[P1] checkout errors" in text
    assert "error rate 7.2% &gt; 5% for 5m after deploy 42" in flat(blocks)  # ">" escaped for mrkdwn
    assert "error_rate = 0.072" in flat(blocks)
    assert "revision 41" in flat(blocks)
    assert "*Waiting for:* approval from engineering_lead" in flat(blocks)
    assert f"https://r.example/incidents/{rec['id']}" in flat(blocks)
    ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    verbs = [slack_render.parse_action_id(i) for i in ids]
    assert verbs == [("ack", rec["id"]), ("approve", rec["id"]), ("reject", rec["id"])]


def test_acknowledged_incident_drops_the_ack_button_and_names_who(lifecycle: Lifecycle) -> None:
    rec = lifecycle.record(K.ACKNOWLEDGED)
    _, blocks = slack_render.main_message(notice(K.ACKNOWLEDGED, rec))
    ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert ids == [f"rollbackd:approve:{rec['id']}", f"rollbackd:reject:{rec['id']}"]
    assert "*Acknowledged by*\nada" in [f["text"] for b in blocks for f in b.get("fields", [])]


def test_slack_shows_the_verification_result_of_a_real_rollback(lifecycle: Lifecycle) -> None:
    """Opened, approved, rolled back by the executor, verified: Slack says what the verification found."""
    resolved = notice(K.RESOLVED, lifecycle.record(K.RESOLVED))
    _, blocks = slack_render.main_message(resolved)
    assert f"Verification passed: {VERIFY_DETAIL}" in flat(blocks)
    assert "shop/checkout: rolled back (revision 42 → 41)" in flat(blocks)
    assert VERIFY_DETAIL in slack_render.thread_reply(resolved)
    verifying = notice(K.VERIFYING, lifecycle.record(K.VERIFYING))
    assert "shop/checkout: rolled back (revision 42 → 41)" in slack_render.thread_reply(verifying)
    assert "Verification" not in flat(slack_render.main_message(verifying)[1]), "not verified yet"


def test_pagerduty_details_from_the_same_record_carry_actions_and_verification(lifecycle: Lifecycle) -> None:
    resolved = notice(K.RESOLVED, lifecycle.record(K.RESOLVED), ("pagerduty:checkout",))
    details = custom_details(resolved)
    assert details["verification"]["detail"] == VERIFY_DETAIL
    assert details["verification"]["ok"] is True
    assert details["actions"] == [{"target": "shop/checkout", "result": "rolled_back", "from": 42, "to": 41,
                                   "detail": ""}]  # fmt: skip
    assert details["revisions"] == {
        "deployed": 42, "rollback_to": 41, "version": "v2.3.0", "image": "shop/checkout:2.3.0", "author": "dev"
    }  # fmt: skip
    body = PagerDutyNotifier({"checkout": "k" * 32}).event_body(resolved, "trigger")
    assert body["payload"]["custom_details"]["verification"]["detail"] == VERIFY_DETAIL
    assert (body["payload"]["component"], body["payload"]["group"]) == ("checkout", "shop")


async def test_failed_verification_is_what_slack_says_failed(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    ada, totp = approver(tmp_path)
    service = IncidentService(
        store, clock, [ada], VerifyingExecutor(verified=False, detail="error rate still 9%"),
        manual_rollback=lambda: ApprovalRequirement(MappingProxyType({})),
    )  # fmt: skip
    opened = await service.on_decision(checkout_decision(), checkout_alert())
    await service.approve(opened.id, "ada", totp.at(clock.now()))
    await service.idle()
    failed = (await service.get(opened.id)).to_json()
    await service.close()
    reply = slack_render.thread_reply(notice(K.FAILED, failed))
    assert reply == ":x: Failed: Verification failed: error rate still 9%. A human must act."


async def test_all_of_quorum_lists_every_missing_role(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    grace, totp = approver(tmp_path, "grace", "cto")
    requirement = ApprovalRequirement(MappingProxyType({"cto": 1, "data_lead": 1}), QuorumMode.ALL_OF)
    service = IncidentService(store, clock, [grace], VerifyingExecutor(), manual_rollback=lambda: requirement)
    opened = await service.on_decision(replace(checkout_decision(), approval=requirement), checkout_alert())
    assert slack_render.waiting_for(notice(K.OPENED, opened.to_json())) == "approval from cto and data_lead"
    half = await service.approve(opened.id, "grace", totp.at(clock.now()))
    await service.close()
    assert slack_render.waiting_for(notice(K.NOTE, half.to_json())) == "approval from data_lead"


def test_approval_modal_asks_for_the_code_in_an_input() -> None:
    modal = slack_render.approval_modal("inc1", "checkout errors")
    [field] = [b for b in modal["blocks"] if b["type"] == "input"]
    assert field["element"]["type"] == "plain_text_input"
    assert modal["private_metadata"] == "inc1"


def test_foreign_action_ids_are_not_ours() -> None:
    assert slack_render.parse_action_id("rollbackd:delete:inc1") is None
    assert slack_render.parse_action_id("other:ack:inc1") is None
    assert slack_render.parse_action_id("rollbackd:ack:") is None


def test_pagerduty_actions_follow_the_incident(lifecycle: Lifecycle) -> None:
    actions = [event_action(notice(k, r)) for k, r in lifecycle.pairs()]
    kinds = [k for k, _ in lifecycle.steps]
    assert kinds == [K.OPENED, K.AWAITING_APPROVAL, K.ACKNOWLEDGED, K.APPROVED, K.ROLLING_BACK, K.VERIFYING,
                     K.RESOLVED]  # fmt: skip
    assert actions == ["trigger", None, "acknowledge", None, None, None, "resolve"]
    assert incident_id_from_dedup_key("rollbackd-inc1") == "inc1"
    assert incident_id_from_dedup_key("somebody-else") is None


@pytest.mark.parametrize(("sev", "expected"), [("P0", "critical"), ("P1", "error"), ("P2", "warning"), ("P3", "info")])
def test_pagerduty_severity_mapping(lifecycle: Lifecycle, sev: str, expected: str) -> None:
    notifier = PagerDutyNotifier({"default": "k" * 32})
    body = notifier.event_body(notice(K.OPENED, lifecycle.record(K.OPENED), sev=sev), "trigger")
    assert body["payload"]["severity"] == expected
    assert body["payload"]["custom_details"]["rule"] == "checkout-error-rate"


def test_pagerduty_routing_from_channels(lifecycle: Lifecycle) -> None:
    notifier = PagerDutyNotifier({"checkout": "a" * 32, "security": "b" * 32, "P0": "c" * 32})
    rec = lifecycle.record(K.OPENED)
    assert notifier.services_for(notice(K.OPENED, rec, ("slack", "pagerduty:security"))) == ["security"]
    assert notifier.services_for(notice(K.OPENED, rec, ("pagerduty",), sev="P0")) == ["P0"]
    assert notifier.services_for(notice(K.OPENED, rec, ("slack",))) == [], "not routed: not paged"
    with pytest.raises(PermanentError) as info:
        notifier.services_for(notice(K.OPENED, rec, ("pagerduty:billing",)))
    assert info.value.reason == "no_route"


def test_codes_never_reach_details(lifecycle: Lifecycle) -> None:
    rec = {**lifecycle.record(K.APPROVED), "approval_code": "123456"}
    rec["approvals"][0]["code"] = "123456"
    assert "123456" not in repr(custom_details(notice(K.APPROVED, rec)))


def test_a_payload_that_is_not_a_record_fails_permanently(lifecycle: Lifecycle) -> None:
    rec = lifecycle.record(K.OPENED)
    del rec["decision"]
    with pytest.raises(PermanentError) as info:
        notice(K.OPENED, rec)
    assert info.value.reason == "bad_payload"
