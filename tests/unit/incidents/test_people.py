"""Rejecting always works for an authorised approver, also after a partial quorum (SQLite and PostgreSQL).

Rejecting stops an action — the fail-safe direction — so neither a role the
approvals already cover nor an approval the same person gave earlier may stand
in its way, whether the code comes with it (API, CLI) or the identity is
proved by a signed Slack interaction (``reject_verified``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from daemon.clock import FakeClock
from daemon.incidents.service import IncidentService
from daemon.model import (
    ActionKind,
    Alert,
    AlertStatus,
    ApprovalRequirement,
    Decision,
    QuorumMode,
    Severity,
    Target,
)
from tests.unit.incidents.conftest import PERSONAL_CODE, FakeExecutor, Secrets

WEB = Target("shop", "web")


def firing() -> Alert:
    return Alert(
        name="DataCorruption", status=AlertStatus.FIRING,
        labels=MappingProxyType({"namespace": "shop", "deployment": "web"}), annotations=MappingProxyType({}),
        starts_at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC), fingerprint="fp1", source="alertmanager", target=WEB,
    )  # fmt: skip


def two_roles(first: str, second: str) -> Decision:
    """A rollback that needs one approver of each of two roles."""
    approval = ApprovalRequirement(MappingProxyType({first: 1, second: 1}), QuorumMode.ALL_OF, 600)
    return Decision(
        rule="data-corruption", severity=Severity.P0, action=ActionKind.ROLLBACK_NOW, targets=(WEB,),
        approval=approval, reason="checksum mismatch rate 12%",
    )  # fmt: skip


def code(secrets: Secrets, name: str, clock: FakeClock) -> str:
    return secrets.totp[name].at(clock.now())


@pytest.mark.parametrize(
    ("rejecter", "role"),
    [("sre2", None), ("sre2", "sre"), ("sre1", None), ("sre1", "sre")],
    ids=["other-approver", "other-approver-named-role", "same-person", "same-person-named-role"],
)
async def test_rejection_after_a_partial_quorum_ends_the_incident_rejected(
    service: IncidentService, executor: FakeExecutor, approver_secrets: Secrets, clock: FakeClock,
    rejecter: str, role: str | None,
) -> None:  # fmt: skip
    opened = await service.on_decision(two_roles("sre", "data-lead"), firing())
    half = await service.approve(opened.id, "sre1", code(approver_secrets, "sre1", clock))
    assert (half.state, dict(half.missing_roles)) == ("awaiting_approval", {"data-lead": 1})
    await clock.advance(31)  # a new TOTP step: sre1's code is not a replay
    done = await service.reject(opened.id, rejecter, code(approver_secrets, rejecter, clock), role=role,
                                comment="not during the migration")  # fmt: skip
    await service.idle()
    assert done.state == "rejected"
    assert not done.open
    assert [(a.approver, a.role, a.verdict) for a in done.approvals] == [
        ("sre1", "sre", "approve"), (rejecter, "sre", "reject"),
    ]  # fmt: skip
    assert executor.requests == [], "no rollback runs"
    assert (await service.get(opened.id)).state == "rejected"


async def test_slack_reject_by_an_approver_whose_role_is_covered(
    service: IncidentService, executor: FakeExecutor, clock: FakeClock
) -> None:
    """The code-free Slack Reject: pam approved as product owner with her code, then presses Reject."""
    opened = await service.on_decision(two_roles("product-owner", "cto"), firing())
    half = await service.approve(opened.id, "pam", PERSONAL_CODE, via="cli")
    assert dict(half.missing_roles) == {"cto": 1}
    done = await service.reject_verified(opened.id, "pam", via="slack")
    await service.idle()
    assert done.state == "rejected"
    assert [(a.approver, a.verdict, a.via) for a in done.approvals] == [("pam", "approve", "cli"),
                                                                         ("pam", "reject", "slack")]  # fmt: skip
    assert executor.requests == []
