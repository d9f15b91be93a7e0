"""The guard in the incident path, on a real store (``--store=both``), in fake time, with a recording executor.

A pause or a shadow rule holds an automated rollback right before it would
start: the decision is still recorded and notified, the executor is asked only
for a server-side dry run, and a break-glass rollback still runs. Expiry lets
automation act again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest
from sqlalchemy import select

from daemon.clock import FakeClock
from daemon.control.guard import AutomationGuard
from daemon.control.pauses import Pauses
from daemon.control.shadow import shadow_report
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
from daemon.scope import Scope
from daemon.store.db import Store
from daemon.store.tables import HoldRow, OutboxRow
from tests.unit.incidents.conftest import FakeExecutor, Secrets, approver_secrets, make_service

__all__ = ["approver_secrets", "make_service"]  # fixtures shared with the incidents tests

WEB = Target("shop", "web")


@dataclass
class DryRunAwareExecutor(FakeExecutor):
    """The recording executor, answering a dry run as the real one does: DRY_RUN, with the plan's revisions."""

    async def execute(self, req: RollbackRequest) -> RollbackOutcome:
        if not req.dry_run:
            return await super().execute(req)
        self.requests.append(req)
        return RollbackOutcome(tuple(TargetOutcome(t, TargetResult.DRY_RUN, 5, 4, "dry run") for t in req.targets))


@pytest.fixture
def executor() -> DryRunAwareExecutor:
    return DryRunAwareExecutor()


@pytest.fixture
def pauses(store: Store, clock: FakeClock) -> Pauses:
    return Pauses(store, clock)


@pytest.fixture
def service(
    make_service: Callable[..., IncidentService], store: Store, pauses: Pauses, clock: FakeClock
) -> IncidentService:
    return make_service(guard=AutomationGuard(store, clock, pauses))


def alert(fp: str, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(
        name="HighErrorRate", status=status, labels=MappingProxyType({"namespace": "shop", "deployment": "web"}),
        annotations=MappingProxyType({}), starts_at=datetime(2026, 1, 1, tzinfo=UTC), fingerprint=fp,
        source="alertmanager", target=WEB, value=0.07,
    )  # fmt: skip


def decision(*, shadow: bool = False) -> Decision:
    return Decision(
        rule="error-rate-above-5", severity=Severity.P1, action=ActionKind.ROLLBACK_NOW, targets=(WEB,),
        reason="error rate 7%", channels=("#ops",), shadow=shadow,
    )  # fmt: skip


async def summaries(store: Store, incident_id: str) -> list[str]:
    async with store.transaction() as s:
        rows = await s.scalars(select(OutboxRow).where(OutboxRow.incident_id == incident_id).order_by(OutboxRow.id))
        return [r.payload["summary"] for r in rows]


async def holds(store: Store) -> list[HoldRow]:
    async with store.transaction() as s:
        return list(await s.scalars(select(HoldRow).order_by(HoldRow.id)))


def code(secrets: Secrets, name: str, clock: FakeClock) -> str:
    return secrets.totp[name].at(clock.now())


async def test_a_pause_holds_the_automated_rollback_and_says_so(
    service: IncidentService, pauses: Pauses, executor: DryRunAwareExecutor, store: Store
) -> None:
    await pauses.pause(Scope.parse("namespace:shop"), "db failover drill", "sre1", timedelta(hours=2))
    view = await service.on_decision(decision(), alert("fp1"))
    await service.idle()
    held = await service.get(view.id)
    assert held.state == "escalated"
    assert [r.dry_run for r in executor.requests] == [True]  # the plan was checked; no write was asked for
    notes = await summaries(store, view.id)
    wanted = "would roll back shop/web revision 5 → 4: automation paused by sre1 (db failover drill) until "
    assert any(n.startswith(wanted) for n in notes), notes
    assert next(t for t in held.timeline if t.action == "rollback_held").actor == "guard:pause"
    [hold] = await holds(store)
    assert (hold.incident_id, hold.guard, hold.would["results"][0]["result"]) == (view.id, "pause", "dry_run")


async def test_break_glass_still_rolls_back_while_paused(
    service: IncidentService, pauses: Pauses, executor: DryRunAwareExecutor, approver_secrets: Secrets,
    clock: FakeClock,
) -> None:  # fmt: skip
    await pauses.pause(Scope.parse("all"), "freeze", "sre1", timedelta(hours=2))
    codes = [("sre1", code(approver_secrets, "sre1", clock)), ("sre2", code(approver_secrets, "sre2", clock))]
    view = await service.manual_rollback([WEB], "bad deploy", codes, via="cli")
    await service.idle()
    assert [(r.automatic, r.dry_run) for r in executor.requests] == [(False, None)]
    assert (await service.get(view.id)).state == "resolved"


async def test_expiry_lets_automation_roll_back_again_and_other_scopes_never_held(
    service: IncidentService, pauses: Pauses, executor: DryRunAwareExecutor, clock: FakeClock
) -> None:
    await pauses.pause(Scope.parse("deployment:shop/web"), "canary", "sre1", timedelta(minutes=10))
    await pauses.pause(Scope.parse("namespace:other"), "unrelated", "sre2", timedelta(hours=1))
    first = await service.on_decision(decision(), alert("fp1"))
    await service.idle()
    assert (await service.get(first.id)).state == "escalated"
    await service.on_alert_resolved(alert("fp1", AlertStatus.RESOLVED))  # the held incident ends with its alert
    await clock.advance(10 * 60)
    second = await service.on_decision(decision(), alert("fp2"))
    await service.idle()
    assert second.id != first.id
    assert (await service.get(second.id)).state == "resolved"
    assert [r.dry_run for r in executor.requests] == [True, None]  # the second one was a real rollback


async def test_a_shadow_rule_runs_the_whole_path_labelled_shadow_and_never_writes(
    service: IncidentService, executor: DryRunAwareExecutor, store: Store, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(shadow=True), alert("fp1"))
    await service.idle()
    watching = await service.get(view.id)
    assert watching.state == "open"  # it waits to see whether the alert clears without the rollback
    assert [r.dry_run for r in executor.requests] == [True]
    notes = await summaries(store, view.id)
    assert notes
    assert all(n.startswith("SHADOW (nothing is changed): ") for n in notes), notes
    assert any("would roll back shop/web revision 5 → 4: shadow rule error-rate-above-5" in n for n in notes)
    await service.on_alert_resolved(alert("fp1", AlertStatus.RESOLVED))
    assert (await service.get(view.id)).state == "resolved"
    [report] = await shadow_report(store, clock.now() - timedelta(days=7))
    assert (report.rule, report.would_roll_back, report.resolved_without, report.still_open) == (
        "error-rate-above-5", 1, 1, 0
    )  # fmt: skip
    assert dict(report.targets) == {"shop/web": 1}
    assert await shadow_report(store, clock.now() + timedelta(seconds=1)) == []
