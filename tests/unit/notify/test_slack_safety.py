"""Nothing an alert, a rule file, a person or a deploy event carries can forge a Slack message or break its limits.

The records come from the real incident path (``tests.fakes.records``); the
untrusted strings are put where they arrive in production — alert labels,
targets from labels, the decision's rule name and reason, measured values, the
deploy's author and version from Kafka, who acknowledged (a PagerDuty user's
name), approvers' names, comments and roles, action and verification details,
the summary — through the record's own types, and every Slack rendering (the
main message, its fallback text, every thread reply, the approval modal) is
checked:
- no unescaped ``<!``, ``<@``, ``<#`` or ``<http`` other than the links rollbackd makes itself;
- with long and numerous values, every block passes slack_sdk's ``Block.parse(...).validate_json()``
  and Slack's documented limits, cut visibly with "…" and a link to the full record;
  PagerDuty's summary is cut to 1,024 characters.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block
from slack_sdk.web.async_client import AsyncWebClient

from daemon.incidents.record import ActionEntry, ApprovalEntry, IncidentRecord, Verification
from daemon.model import NotificationKind, Target
from daemon.notify import slack_render
from daemon.notify.automation import AutomationSlackNotifier
from daemon.notify.notice import Notice
from daemon.notify.pagerduty import PagerDutyNotifier
from tests.fakes.fixtures import SLACK_TOKEN, fake_slack
from tests.fakes.records import Lifecycle, lifecycle
from tests.fakes.slack_server import FakeSlack

__all__ = ["fake_slack", "lifecycle"]

PUBLIC = "https://rollbackd.example"
CONTROL = ["<!channel>", "<!here>", "<!everyone>", "<@U0123ABCD>", "<#C0123ABCD|general>", "<!subteam^S0123|ops>",
           "<!date^1392734382^{date}|x>", "<https://evil.example|click here>", "<http://evil.example>", "<", ">", "&",
           "&lt;!channel&gt;", "*", "_", "`", "\n"]  # fmt: skip
# Kubernetes names never hold "/", and a target's text form uses it as the separator.
NO_SLASH = [c for c in CONTROL if "/" not in c]
FORGED = re.compile(r"<[!@#]|<http")


def evil(pieces: list[str], alphabet: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    filler = st.text(st.characters() if alphabet is None else alphabet, max_size=8)
    return st.lists(st.one_of(st.sampled_from(pieces), filler), min_size=1, max_size=5).map("".join)


NAME_CHARS = st.characters(blacklist_characters="/")


def notice(kind: NotificationKind, rec: IncidentRecord, summary: str) -> Notice:
    """A notice the way the outbox delivers it: the record's JSON, read back by ``Notice.from_payload``."""
    payload = {"kind": kind.value, "severity": rec.severity.value, "summary": summary, "incident": rec.to_json(),
               "channels": ["slack", "pagerduty"], "outbox_id": 1}  # fmt: skip
    return Notice.from_payload(payload)


def with_text(rec: IncidentRecord, t: dict[str, str]) -> IncidentRecord:
    """``rec`` with the untrusted strings everywhere they reach a record in production."""
    d = rec.decision
    assert d.deploy is not None
    decision = replace(
        d, rule=t["rule"], reason=t["reason"], targets=(Target(t["ns"], t["name"]),),
        measured=MappingProxyType({t["metric"]: 0.5}),
        deploy=replace(d.deploy, author=t["author"], version=t["version"]),
    )  # fmt: skip
    at = rec.opened_at
    return replace(
        rec, decision=decision, acknowledged_by=t["person"], missing_roles=MappingProxyType({t["role"]: 1}),
        alerts=tuple(replace(a, labels=MappingProxyType({t["label"]: t["value"]})) for a in rec.alerts),
        approvals=(ApprovalEntry(t["person"], t["role"], "approve", "slack", at, t["comment"]),),
        actions=(ActionEntry(f"{t['ns']}/{t['name']}", "rolled_back", 42, 41, t["detail"]),),
        verification=Verification(False, t["detail"], at + timedelta(minutes=5)),
    )  # fmt: skip


def renderings(n: Notice) -> list[str]:
    """Every Slack text a responder could see for ``n``: the blocks, the fallback, the thread reply, the modal.

    PagerDuty's summary is plain text, not mrkdwn: it is not escaped (only cut to 1,024).
    """
    url = f"{PUBLIC}/incidents/{n.incident_id}"
    text, blocks = slack_render.main_message(n, url)
    modal = slack_render.approval_modal(n.incident_id, n.summary)
    out = [text, slack_render.thread_reply(n, url), str(modal)]
    out += [str(b) for b in blocks]
    # rollbackd's own links are the only "<http" allowed: remove exactly those, then look.
    return [s.replace(f"<{url}|decision record>", "").replace(f"<{url}|full record>", "") for s in out]


TEXTS = st.fixed_dictionaries(
    {
        "rule": evil(CONTROL), "reason": evil(CONTROL),
        "ns": evil(NO_SLASH, NAME_CHARS), "name": evil(NO_SLASH, NAME_CHARS),
        "metric": evil(CONTROL), "author": evil(CONTROL), "version": evil(CONTROL), "person": evil(CONTROL),
        "role": evil(CONTROL), "label": evil(CONTROL), "value": evil(CONTROL), "comment": evil(CONTROL),
        "detail": evil(CONTROL), "summary": evil(CONTROL),
    }
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=TEXTS, kind=st.sampled_from(list(NotificationKind)))
def test_no_control_sequence_survives_any_rendering(lifecycle: Lifecycle, texts: dict[str, str],
                                                    kind: NotificationKind) -> None:  # fmt: skip
    base = IncidentRecord.from_json(lifecycle.record(NotificationKind.OPENED))
    n = notice(kind, with_text(base, texts), texts["summary"])
    for rendered in renderings(n):
        forged = FORGED.search(rendered)
        assert forged is None, f"unescaped {forged.group()!r} in {rendered[:300]!r}"


def test_a_channel_mention_in_a_label_arrives_as_text(lifecycle: Lifecycle) -> None:
    """The issue's example: ``deployment="web<!channel>"`` must read as text, not page the channel."""
    base = IncidentRecord.from_json(lifecycle.record(NotificationKind.OPENED))
    rec = replace(base, decision=replace(base.decision, targets=(Target("shop", "web<!channel>"),)))
    _, blocks = slack_render.main_message(notice(NotificationKind.OPENED, rec, "web down"))
    fields = [f["text"] for b in blocks for f in b.get("fields", [])]
    assert "*Targets*\nshop/web&lt;!channel&gt;" in fields


def _limits_hold(block: dict[str, Any]) -> None:
    Block.parse(block).validate_json()  # type: ignore[union-attr]  # slack_sdk's own checks
    if block["type"] == "header":
        assert len(block["text"]["text"]) <= slack_render.HEADER_TEXT_MAX
    if block["type"] == "section":
        if "text" in block:
            assert len(block["text"]["text"]) <= slack_render.SECTION_TEXT_MAX
        for f in block.get("fields", []):
            assert len(f["text"]) <= slack_render.FIELD_TEXT_MAX
        assert len(block.get("fields", [])) <= 10
    for element in block.get("elements", []):
        if element.get("type") == "button":
            assert len(element["value"]) <= slack_render.BUTTON_VALUE_MAX


def test_long_and_numerous_values_stay_within_slacks_limits_and_say_they_were_cut(lifecycle: Lifecycle) -> None:
    """A break-glass rollback of 50 long targets (the issue measured a 2,108-character Targets field)."""
    base = IncidentRecord.from_json(lifecycle.record(NotificationKind.OPENED))
    targets = tuple(Target(f"namespace-{i:02d}-" + "n" * 20, "deployment-" + "d" * 40) for i in range(50))
    d = replace(
        base.decision, targets=targets, reason="r" * 10_000, rule="rule-" + "x" * 300,
        measured=MappingProxyType({f"metric_{i}_" + "m" * 30: i / 7 for i in range(200)}),
    )  # fmt: skip
    at = base.opened_at
    rec = replace(
        base, decision=d, acknowledged_by="a" * 3000,
        approvals=tuple(ApprovalEntry(f"approver-{i}", "engineering_lead", "approve", "api", at) for i in range(40)),
        actions=tuple(ActionEntry(str(t), "rolled_back", 42, 41, "x" * 200) for t in targets),
        verification=Verification(True, "v" * 5000, at),
    )  # fmt: skip
    url = f"{PUBLIC}/incidents/{rec.id}"
    for kind in NotificationKind:
        n = notice(kind, rec, "s" * 5000)
        text, blocks = slack_render.main_message(n, url)
        assert len(blocks) <= slack_render.BLOCKS_MAX
        for block in blocks:
            _limits_hold(block)
        assert len(text) <= slack_render.MESSAGE_TEXT_MAX
        assert len(slack_render.thread_reply(n, url)) <= slack_render.MESSAGE_TEXT_MAX
        summary = PagerDutyNotifier({"default": "k"}, public_url=PUBLIC).event_body(n, "trigger")["payload"]["summary"]
        assert len(summary) <= 1024
        assert summary.endswith("…")
    _, blocks = slack_render.main_message(notice(NotificationKind.OPENED, rec, "down"), url)
    targets_field = next(f["text"] for b in blocks for f in b.get("fields", []) if f["text"].startswith("*Targets*"))
    assert targets_field.endswith(f"… <{url}|full record>"), targets_field[-80:]
    why = next(b["text"]["text"] for b in blocks if b.get("text", {}).get("text", "").startswith("*Why:*"))
    assert why.endswith(f"… <{url}|full record>")


async def test_a_pause_reason_typed_by_a_person_cannot_mention_the_channel(fake_slack: FakeSlack) -> None:
    """The automation notices (pause, resume) carry people's free text: escaped and cut like every Slack text."""
    client = AsyncWebClient(token=SLACK_TOKEN, base_url=fake_slack.base_url, retry_handlers=[])
    notifier = AutomationSlackNotifier(client, default_channel="#incidents")
    await notifier.deliver({"text": "automation paused by ana: <!channel> <https://evil.example|freeze> " + "x" * 5000})
    [message] = fake_slack.top_level()
    assert FORGED.search(message.text) is None, message.text[:200]
    assert "&lt;!channel&gt; &lt;https://evil.example|freeze&gt;" in message.text
    assert len(message.text) <= slack_render.MESSAGE_TEXT_MAX
