"""Approvals that cannot be misread: quorum progress, who did what and when, repeats and the deploy's author.

A real ``IncidentService`` on the real store (SQLite and PostgreSQL with
``--store=both``) decides a CTO + Data Lead rollback of a deploy that dan
authored, under a rule with ``forbid_author_approval``; the Slack message is
rendered from each record the service returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemon.clock import FakeClock
from daemon.deploys import DeployEvent, DeployKind
from daemon.incidents.errors import InvalidTransitionError, NotPermittedError
from daemon.incidents.record import IncidentRecord
from daemon.incidents.service import IncidentService
from daemon.model import ApprovalRequirement, NotificationKind
from daemon.notify import slack_render
from daemon.notify.notice import Notice
from daemon.rules.compiled import approval_from
from daemon.rules.schema import ApprovalDef
from daemon.store.db import Store
from tests.unit.incidents.conftest import MANUAL_QUORUM, FakeExecutor, Secrets, make_secrets
from tests.unit.incidents.test_service import CTO_AND_DATA, alert, decision

AUTHOR = "Dan.Dev@example.com"  # as the delivery pipeline spells it on Kafka


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    """The usual approvers, plus a second data lead; dan deploys as ``AUTHOR``."""
    base = make_secrets(tmp_path)
    dan = next(a for a in base.settings if a.name == "dan")
    dana = dan.model_copy(update={"name": "dana"})
    settings = [a.model_copy(update={"deploy_authors": ["dan.dev@example.com"]}) if a is dan else a
                for a in base.settings] + [dana]  # fmt: skip
    return Secrets({**base.totp, "dana": base.totp["dan"]}, settings)


@pytest.fixture
async def svc(store: Store, clock: FakeClock, secrets: Secrets) -> AsyncIterator[IncidentService]:
    service = IncidentService(store, clock, secrets.settings, FakeExecutor(), manual_rollback=lambda: MANUAL_QUORUM)
    yield service
    await service.close()


def authored_decision() -> Any:
    d = decision(CTO_AND_DATA)
    deploy = DeployEvent(
        event_id="deploy-7", kind=DeployKind.SUCCEEDED, service="web", namespace="shop", deployment="web",
        at=alert().starts_at, revision=7, version="v7.0.1", author=AUTHOR,
    )  # fmt: skip
    return replace(d, deploy=deploy, approval=replace(d.approval, forbid_author_approval=True))


def render(rec: IncidentRecord) -> tuple[str, list[str], list[str]]:
    """(all block text, the action ids of the buttons, the verdict lines) of the Slack message for ``rec``."""
    n = Notice(NotificationKind.AWAITING_APPROVAL, rec.severity, "data corruption", ("slack",), 1, rec)
    _, blocks = slack_render.main_message(n, None)
    buttons = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    verdicts = [line for t in texts for line in t.splitlines() if "Approved by" in line or "Rejected by" in line]
    return str(blocks), buttons, verdicts


async def test_quorum_progress_who_and_when_repeats_and_the_author(
    svc: IncidentService, secrets: Secrets, clock: FakeClock
) -> None:
    def code(name: str) -> str:
        return secrets.totp[name].at(clock.now())

    rec = await svc.on_decision(authored_decision(), alert())
    text, buttons, verdicts = render(rec)
    assert "*Approvals:* 0 of 2: cto pending, data-lead pending" in text
    assert "Deploy: v7.0.1 by Dan.Dev@example.com" in text
    assert [b.split(":")[1] for b in buttons] == ["ack", "approve", "reject"]
    assert verdicts == []

    rec = await svc.approve(rec.id, "ana", code("ana"), via="slack")
    text, buttons, verdicts = render(rec)
    assert "*Approvals:* 1 of 2: cto ✓, data-lead pending" in text
    assert verdicts == [f":white_check_mark: Approved by ana as cto at {clock.now():%Y-%m-%d %H:%M} UTC via slack"]
    assert "approve" in [b.split(":")[1] for b in buttons], "the data lead still has to approve"

    await clock.advance(31)
    with pytest.raises(InvalidTransitionError, match="ana has already approved"):
        await svc.approve(rec.id, "ana", code("ana"), via="slack")
    with pytest.raises(NotPermittedError, match=r"dan authored the deploy .*forbid_author_approval"):
        await svc.approve(rec.id, "dan", code("dan"), via="api")
    assert (await svc.get(rec.id)).verdicts("approve") == rec.verdicts("approve"), "refusals change nothing"

    rec = await svc.approve(rec.id, "dana", code("dana"), via="api")
    text, buttons, verdicts = render(rec)
    assert "*Approvals:* 2 of 2: cto ✓, data-lead ✓" in text
    assert not {"approve", "reject"} & {b.split(":")[1] for b in buttons}, "after the verdict: no buttons to press"
    assert [v.split(" at ")[0] for v in verdicts] == [
        ":white_check_mark: Approved by ana as cto", ":white_check_mark: Approved by dana as data-lead",
    ]  # fmt: skip


async def test_the_author_may_still_reject(svc: IncidentService, secrets: Secrets, clock: FakeClock) -> None:
    rec = await svc.on_decision(authored_decision(), alert())
    rec = await svc.reject(rec.id, "dan", secrets.totp["dan"].at(clock.now()), via="api", comment="my bad, not this")
    _, buttons, verdicts = render(rec)
    assert rec.state.value == "rejected"
    assert buttons == []
    assert verdicts[0].startswith(":no_entry: Rejected by dan as data-lead at ")
    assert verdicts[0].endswith("via api: my bad, not this")


async def test_without_the_rule_flag_the_author_may_approve(svc: IncidentService, secrets: Secrets,
                                                            clock: FakeClock) -> None:  # fmt: skip
    d = authored_decision()
    rec = await svc.on_decision(replace(d, approval=replace(d.approval, forbid_author_approval=False)), alert())
    rec = await svc.approve(rec.id, "dan", secrets.totp["dan"].at(clock.now()), via="api")
    assert [a.approver for a in rec.verdicts("approve")] == ["dan"]


def test_the_rule_files_flag_reaches_the_decision_record() -> None:
    req = approval_from(ApprovalDef.model_validate({"all_of": ["CTO"], "forbid_author_approval": True}))
    assert req.forbid_author_approval
    assert ApprovalRequirement.from_json(req.to_json()) == req
    assert not approval_from(ApprovalDef.model_validate({"all_of": ["CTO"]})).forbid_author_approval
    assert "forbid_author_approval" not in approval_from(None).to_json()
