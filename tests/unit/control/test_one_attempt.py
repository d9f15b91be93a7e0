"""One automated attempt per bad revision: the pure check, and the driver turning its refusal into a hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from daemon.actions.attempts import check_one_attempt
from daemon.actions.safety import PastIntent
from daemon.actions.undo import plan_undo
from daemon.clock import FakeClock
from daemon.control.guard import AutomationGuard
from daemon.control.hold import ONE_ATTEMPT_REFUSAL
from daemon.control.pauses import Pauses
from daemon.incidents.service import IncidentService
from daemon.model import (
    ActionKind,
    Alert,
    AlertStatus,
    Decision,
    RollbackOutcome,
    RollbackRequest,
    Severity,
    Target,
    TargetOutcome,
    TargetResult,
)
from daemon.store.db import Store
from tests.unit.actions.factories import deployment, history
from tests.unit.incidents.conftest import FakeExecutor, approver_secrets, make_service

__all__ = ["approver_secrets", "make_service"]  # fixtures shared with the incidents tests

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0


PLAN = plan_undo(deployment("web:v3", "3"), history())  # revision 3 (web:v3) back to 2


def past(
    from_hash: str = PLAN.from_template_hash, *, ago_s: float = 600, automatic: bool = True, state: str = "ready"
) -> PastIntent:
    patched = state != "interrupted"
    return PastIntent("inc1:shop/web", state, automatic, False, NOW - timedelta(seconds=ago_s), patched, from_hash, "")


def test_the_same_template_rolled_back_from_within_the_window_is_refused_naming_the_guard() -> None:
    assert PLAN.from_template_hash
    refusal = check_one_attempt(PLAN, [past()], now=NOW, window_s=DAY, exclude_id="x")
    assert refusal is not None
    assert refusal.reason == "one_attempt"
    assert refusal.detail.startswith(f"{ONE_ATTEMPT_REFUSAL}: revision 3 is the template already rolled back from")
    assert "(incident inc1)" in refusal.detail


@pytest.mark.parametrize(
    ("intent", "why"),
    [
        (past("other-template"), "another template: a new revision, not the bad one"),
        (past(ago_s=DAY + 1), "outside the window"),
        (past(automatic=False), "a person's rollback does not count"),
        (past(state="interrupted"), "never reached the cluster"),
    ],
)
def test_what_does_not_count_as_the_first_attempt(intent: PastIntent, why: str) -> None:
    assert check_one_attempt(PLAN, [intent], now=NOW, window_s=DAY, exclude_id="x") is None, why


@dataclass
class RefusingExecutor(FakeExecutor):
    """Answers as the executor does when the one-attempt check holds: every target refused, nothing written."""

    async def execute(self, req: RollbackRequest) -> RollbackOutcome:
        self.requests.append(req)
        detail = f"{ONE_ATTEMPT_REFUSAL}: revision 4 is the template already rolled back from automatically"
        return RollbackOutcome(tuple(TargetOutcome(t, TargetResult.REFUSED, 4, 3, detail) for t in req.targets))


@pytest.fixture
def executor() -> RefusingExecutor:
    return RefusingExecutor()


async def test_a_second_trigger_for_the_same_bad_revision_escalates_and_says_which_guard_held(
    make_service: Callable[..., IncidentService], store: Store, clock: FakeClock
) -> None:
    service = make_service(guard=AutomationGuard(store, clock, Pauses(store, clock)))
    web = Target("shop", "web")
    alert = Alert(
        name="HighErrorRate", status=AlertStatus.FIRING, labels=MappingProxyType({}), annotations=MappingProxyType({}),
        starts_at=NOW, fingerprint="fp9", source="alertmanager", target=web,
    )  # fmt: skip
    decision = Decision(rule="error-rate-above-5", severity=Severity.P1, action=ActionKind.ROLLBACK_NOW, targets=(web,))
    view = await service.on_decision(decision, alert)
    await service.idle()
    record = await service.get(view.id)
    assert record.state == "escalated"
    held = next(t for t in record.timeline if t.action == "rollback_held")
    assert held.actor == "guard:one_attempt"
    assert f"would roll back again: shop/web: {ONE_ATTEMPT_REFUSAL}" in held.detail["why"]
