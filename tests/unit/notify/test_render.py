"""What responders read: Slack blocks and thread replies, PagerDuty events and routing."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.errors import PermanentError
from daemon.model import NotificationKind
from daemon.notify import slack_render
from daemon.notify.pagerduty import PagerDutyNotifier, event_action, incident_id_from_dedup_key
from daemon.notify.record import IncidentView
from tests.fakes.fixtures import LIFECYCLE, record


def view(kind: NotificationKind, rec: dict[str, Any], channels: tuple[str, ...] = (), sev: str = "P1") -> IncidentView:
    return IncidentView.from_payload(
        {
            "incident_id": "inc1",
            "kind": kind.value,
            "severity": sev,
            "summary": "checkout errors",
            "incident": rec,
            "channels": list(channels),
            "outbox_id": 7,
        }
    )


def test_message_says_what_broke_why_and_what_it_waits_for() -> None:
    text, blocks = slack_render.main_message(view(*LIFECYCLE[0]), "https://r.example/incidents/inc1")
    flat = str(blocks)
    assert "[P1] checkout errors" in text
    assert "error rate 7.2% > 5% for 5m after deploy 42" in flat
    assert "error_rate = 0.072" in flat
    assert "revision 41" in flat
    assert "*Waiting for:* approval from engineering_lead" in flat
    assert "https://r.example/incidents/inc1" in flat
    ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [slack_render.parse_action_id(i) for i in ids] == [("ack", "inc1"), ("approve", "inc1"), ("reject", "inc1")]


def test_acknowledged_incident_drops_the_ack_button_and_names_who() -> None:
    _, blocks = slack_render.main_message(view(*LIFECYCLE[1]))
    ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert ids == ["rollbackd:approve:inc1", "rollbackd:reject:inc1"]
    assert "*Acknowledged by*\nada" in [f["text"] for b in blocks for f in b.get("fields", [])]


def test_all_of_quorum_lists_every_missing_role() -> None:
    rec = record("awaiting_approval")
    rec["decision"]["approval"] = {"roles": {"cto": 1, "data_lead": 1}, "mode": "all_of"}
    rec["approvals"] = [{"approver": "grace", "role": "cto", "verdict": "approve"}]
    assert slack_render.waiting_for(view(NotificationKind.APPROVED, rec)) == "approval from data_lead"


def test_approval_modal_asks_for_the_code_in_an_input() -> None:
    modal = slack_render.approval_modal("inc1", "checkout errors")
    [field] = [b for b in modal["blocks"] if b["type"] == "input"]
    assert field["element"]["type"] == "plain_text_input"
    assert modal["private_metadata"] == "inc1"


def test_foreign_action_ids_are_not_ours() -> None:
    assert slack_render.parse_action_id("rollbackd:delete:inc1") is None
    assert slack_render.parse_action_id("other:ack:inc1") is None
    assert slack_render.parse_action_id("rollbackd:ack:") is None


def test_pagerduty_actions_follow_the_incident() -> None:
    actions = [event_action(view(k, r)) for k, r in LIFECYCLE]
    assert actions == ["trigger", "acknowledge", None, None, None, "resolve"]
    assert event_action(view(NotificationKind.REJECTED, record("rejected", is_open=False))) == "resolve"
    assert incident_id_from_dedup_key("rollbackd-inc1") == "inc1"
    assert incident_id_from_dedup_key("somebody-else") is None


@pytest.mark.parametrize(("sev", "expected"), [("P0", "critical"), ("P1", "error"), ("P2", "warning"), ("P3", "info")])
def test_pagerduty_severity_mapping(sev: str, expected: str) -> None:
    notifier = PagerDutyNotifier({"default": "k" * 32})
    body = notifier.event_body(view(NotificationKind.OPENED, record("open"), sev=sev), "trigger")
    assert body["payload"]["severity"] == expected
    assert body["payload"]["custom_details"]["rule"] == "checkout-error-rate"


def test_pagerduty_routing_from_channels() -> None:
    notifier = PagerDutyNotifier({"checkout": "a" * 32, "security": "b" * 32, "P0": "c" * 32})
    rec = record("open")
    assert notifier.services_for(view(NotificationKind.OPENED, rec, ("slack", "pagerduty:security"))) == ["security"]
    assert notifier.services_for(view(NotificationKind.OPENED, rec, ("pagerduty",), sev="P0")) == ["P0"]
    assert notifier.services_for(view(NotificationKind.OPENED, rec, ("slack",))) == [], "not routed: not paged"
    with pytest.raises(PermanentError) as info:
        notifier.services_for(view(NotificationKind.OPENED, rec, ("pagerduty:billing",)))
    assert info.value.reason == "no_route"


def test_codes_never_reach_details() -> None:
    rec = {**record("open"), "approval_code": "123456"}
    rec["approvals"] = [{"approver": "ada", "role": "lead", "verdict": "approve", "code": "123456"}]
    assert "123456" not in repr(view(NotificationKind.OPENED, rec).details())
