"""IncidentService on a real store (SQLite here; ``--store=postgres`` runs the same on PostgreSQL), in fake time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.incidents.errors import (
    ApproverLockedError,
    InvalidTransitionError,
    NotPermittedError,
    WrongCodeError,
)
from daemon.incidents.service import IncidentService
from daemon.model import (
    ActionKind,
    Alert,
    AlertStatus,
    ApprovalRequirement,
    Decision,
    OnDeadline,
    QuorumMode,
    RollbackOutcome,
    RollbackRequest,
    Severity,
    Target,
    TargetResult,
)
from daemon.store.db import Store
from daemon.store.tables import AuditRow, OutboxRow
from tests.unit.incidents.conftest import PERSONAL_CODE, FakeExecutor, Secrets

WEB = Target("shop", "web")


def alert(fp: str = "fp1", status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(
        name="DataCorruption",
        status=status,
        labels=MappingProxyType({"namespace": "shop", "deployment": "web"}),
        annotations=MappingProxyType({}),
        starts_at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
        fingerprint=fp,
        source="alertmanager",
        target=WEB,
        value=0.12,
    )


def decision(
    roles: dict[str, int] | None = None,
    *,
    action: ActionKind = ActionKind.ROLLBACK_NOW,
    on_deadline: OnDeadline = OnDeadline.ESCALATE,
    deadline_s: float | None = 600,
    mode: QuorumMode = QuorumMode.ALL_OF,
    rto: float | None = 600,
) -> Decision:
    return Decision(
        rule="data-corruption",
        severity=Severity.P0,
        action=action,
        targets=(WEB,),
        approval=ApprovalRequirement(MappingProxyType(roles or {}), mode, deadline_s, on_deadline),
        rollback_time_objective_s=rto,
        reason="checksum mismatch rate 12%",
        channels=("#incidents",),
        measured=MappingProxyType({"corrupt_ratio": 0.12}),
    )


CTO_AND_DATA = {"cto": 1, "data-lead": 1}


def code(secrets: Secrets, name: str, clock: FakeClock) -> str:
    return secrets.totp[name].at(clock.now())


async def outbox(store: Store, incident_id: str) -> list[OutboxRow]:
    async with store.transaction() as s:
        rows = await s.scalars(select(OutboxRow).where(OutboxRow.incident_id == incident_id).order_by(OutboxRow.id))
        return list(rows.all())


async def test_two_role_quorum_blocks_the_rollback_until_both_roles_approve(
    service: IncidentService, executor: FakeExecutor, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    assert view.state == "awaiting_approval"
    view = await service.approve(view.id, "ana", code(approver_secrets, "ana", clock), via="cli")
    await service.idle()
    assert view.state == "awaiting_approval"
    assert dict(view.missing_roles) == {"data-lead": 1}
    assert executor.requests == []
    await clock.advance(31)
    view = await service.approve(view.id, "dan", code(approver_secrets, "dan", clock))
    await service.idle()
    assert [r.targets for r in executor.requests] == [(WEB,)]
    done = await service.get(view.id)
    assert done.state == "resolved"
    assert [(a.approver, a.role) for a in done.approvals] == [("ana", "cto"), ("dan", "data-lead")]
    actions = [t.action for t in done.timeline]
    assert actions == [
        "decision", "approval", "approval", "rollback_started", "rollback_finished", "verification_passed"
    ]  # fmt: skip
    finished = next(t for t in done.timeline if t.action == "rollback_finished")
    assert finished.detail["results"][0]["result"] == "rolled_back"


async def test_approver_without_the_needed_role_is_refused(
    service: IncidentService, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    with pytest.raises(NotPermittedError, match="none of the roles"):
        await service.approve(view.id, "eve", code(approver_secrets, "eve", clock))
    assert (await service.get(view.id)).approvals == ()


async def test_expired_deadline_escalates_and_notifies(
    service: IncidentService, store: Store, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    await clock.advance(599)
    await service.fire_due()
    assert (await service.get(view.id)).state == "awaiting_approval"
    await clock.advance(1)
    await service.fire_due()
    after = await service.get(view.id)
    assert after.state == "escalated"
    assert "escalated" in [r.kind for r in await outbox(store, view.id)]


async def test_deadline_hold_expires_and_proceed_rolls_back(
    make_service: Callable[..., IncidentService], executor: FakeExecutor, clock: FakeClock
) -> None:
    service = make_service()
    held = await service.on_decision(decision({"cto": 1}, on_deadline=OnDeadline.HOLD), alert("a"))
    other = replace(decision({"eng-lead": 1}, on_deadline=OnDeadline.PROCEED), rule="error-rate")
    proceeding = await service.on_decision(other, alert("b"))
    await clock.advance(600)
    await service.fire_due()
    await service.idle()
    assert (await service.get(held.id)).state == "expired"
    assert (await service.get(proceeding.id)).state == "resolved"
    assert [r.incident_id for r in executor.requests] == [proceeding.id]


async def test_wrong_code_is_rejected_and_the_sixth_try_is_locked_out(
    service: IncidentService, approver_secrets: Secrets, clock: FakeClock, store: Store
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    good = code(approver_secrets, "ana", clock)
    wrong = "000000" if good != "000000" else "111111"
    remaining = []
    with capture_logs() as logs:
        for _ in range(5):
            with pytest.raises(WrongCodeError) as err:
                await service.approve(view.id, "ana", wrong)
            assert wrong not in str(err.value)
            remaining.append(err.value.remaining)
        with pytest.raises(ApproverLockedError):
            await service.approve(view.id, "ana", good)
    assert remaining == [4, 3, 2, 1, 0]
    assert not any(wrong in repr(line) or good in repr(line) for line in logs)
    assert any(line.get("approver") == "ana" for line in logs)
    async with store.transaction() as s:
        audit = (await s.scalars(select(AuditRow))).all()
    assert not any(good in repr(a.detail) or wrong in repr(a.detail) for a in audit)
    # The lockout ends after 15 minutes; the right code then counts.
    await clock.advance(15 * 60 + 1)
    view = await service.approve(view.id, "ana", code(approver_secrets, "ana", clock))
    assert [a.approver for a in view.approvals] == ["ana"]


async def test_a_totp_code_cannot_be_replayed(
    service: IncidentService, approver_secrets: Secrets, clock: FakeClock
) -> None:
    first = await service.on_decision(decision(CTO_AND_DATA), alert("a"))
    second = await service.on_decision(replace(decision(CTO_AND_DATA), rule="other"), alert("b"))
    used = code(approver_secrets, "ana", clock)
    await service.approve(first.id, "ana", used)
    with pytest.raises(WrongCodeError):
        await service.approve(second.id, "ana", used)


async def test_argon2_personal_code(service: IncidentService) -> None:
    d = decision({"product-owner": 1}, action=ActionKind.ROLLBACK_WITHIN)
    view = await service.on_decision(d, alert())
    with pytest.raises(WrongCodeError):
        await service.approve(view.id, "pam", "not-my-code")
    view = await service.approve(view.id, "pam", PERSONAL_CODE)
    assert view.state in ("approved", "rolling_back")
    await service.idle()


async def test_killed_while_awaiting_approval_resumes_the_same_incident_and_deadline(
    make_service: Callable[..., IncidentService], executor: FakeExecutor, clock: FakeClock, approver_secrets: Secrets
) -> None:
    first = make_service()
    view = await first.on_decision(decision(CTO_AND_DATA), alert())
    await first.approve(view.id, "ana", code(approver_secrets, "ana", clock))
    deadline = view.timer("approval_deadline")
    assert deadline is not None
    await first.close()
    del first  # the daemon "dies"

    await clock.advance(120)
    second = make_service()
    assert await second.resume() == []
    again = await second.on_decision(decision(CTO_AND_DATA), alert("fp2"))
    assert again.id == view.id  # the new alert joins the same incident
    assert again.state == "awaiting_approval"
    assert again.timer("approval_deadline") == deadline
    assert [a.approver for a in again.approvals] == ["ana"]
    await clock.advance(480)
    await second.fire_due()
    assert (await second.get(view.id)).state == "escalated"
    assert executor.requests == []


async def test_restart_during_a_rollback_re_drives_it(
    make_service: Callable[..., IncidentService], executor: FakeExecutor
) -> None:
    standby = make_service(is_leader=lambda: False)
    view = await standby.on_decision(decision(), alert())
    assert view.state == "approved"  # approved, but only the leader acts
    assert executor.requests == []
    leader = make_service()
    assert await leader.resume() == [view.id]
    await leader.idle()
    assert (await leader.get(view.id)).state == "resolved"
    assert len(executor.requests) == 1


async def test_failed_rollback_ends_failed(service: IncidentService, store: Store, executor: FakeExecutor) -> None:
    executor.result = TargetResult.REFUSED
    view = await service.on_decision(decision(), alert())
    await service.idle()
    after = await service.get(view.id)
    assert after.state == "failed"
    assert "failed" in [r.kind for r in await outbox(store, view.id)]


async def test_alerts_join_one_incident_and_resolution_closes_it(service: IncidentService) -> None:
    d = decision(CTO_AND_DATA)
    one = await service.on_decision(d, alert("fp1"))
    two = await service.on_decision(d, alert("fp2"))
    assert one.id == two.id
    assert {a.fingerprint for a in two.alerts} == {"fp1", "fp2"}
    await service.on_alert_resolved(alert("fp1", AlertStatus.RESOLVED))
    assert (await service.get(one.id)).state == "awaiting_approval"
    await service.on_alert_resolved(alert("fp2", AlertStatus.RESOLVED))
    closed = await service.get(one.id)
    assert closed.state == "resolved"
    assert all(t.status != "pending" for t in closed.timers)
    fresh = await service.on_decision(d, alert("fp3"))
    assert fresh.id != one.id


async def test_ack_stops_escalation_is_idempotent_and_propagates(
    service: IncidentService, store: Store, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(action=ActionKind.NOTIFY), alert())
    await clock.advance(300)
    await service.fire_due()
    kinds = [r.kind for r in await outbox(store, view.id)]
    assert kinds.count("escalated") == 2  # one per channel: slack and pagerduty
    acked = await service.acknowledge(view.id, "oncall", via="cli")
    again = await service.acknowledge(view.id, "someone-else", via="slack")
    assert acked.acknowledged_by == again.acknowledged_by == "oncall"
    rows = await outbox(store, view.id)
    acks = [r for r in rows if r.kind == "acknowledged"]
    assert {r.channel for r in acks} == {"slack", "pagerduty"}
    assert acks[0].payload["incident"]["acknowledged_by"] == "oncall"
    await clock.advance(3600)
    assert await service.fire_due() == 0
    assert [r.kind for r in await outbox(store, view.id)].count("escalated") == 2


async def test_objective_breach_is_notified(service: IncidentService, store: Store, clock: FakeClock) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA, deadline_s=None, rto=300), alert())
    await clock.advance(300)
    await service.fire_due()
    after = await service.get(view.id)
    assert after.objective_breached
    assert "objective_breached" in [r.kind for r in await outbox(store, view.id)]


async def test_run_timers_fires_in_fake_time(service: IncidentService, clock: FakeClock) -> None:
    import asyncio  # noqa: PLC0415

    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    task = asyncio.create_task(service.run_timers())

    async def until(check: Callable[[], object]) -> None:
        # The loop does real database I/O between fake-time sleeps: give it real time, bounded.
        for _ in range(500):
            if await check():  # type: ignore[misc]
                return
            await asyncio.sleep(0.01)
        pytest.fail("condition not reached")

    async def sleeping() -> bool:
        return bool(clock._sleepers)

    async def escalated() -> bool:
        return (await service.get(view.id)).state == "escalated"

    try:
        await until(sleeping)
        await clock.advance(599)
        await until(sleeping)
        assert (await service.get(view.id)).state == "awaiting_approval"
        await clock.advance(1)
        await until(escalated)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_break_glass_needs_the_manual_quorum(
    service: IncidentService, executor: FakeExecutor, approver_secrets: Secrets, clock: FakeClock
) -> None:
    with pytest.raises(NotPermittedError, match="quorum is not met"):
        await service.manual_rollback([WEB], "bad deploy", [("sre1", code(approver_secrets, "sre1", clock))])
    assert executor.requests == []
    await clock.advance(30)
    view = await service.manual_rollback(
        [WEB],
        "bad deploy",
        [("sre1", code(approver_secrets, "sre1", clock)), ("sre2", code(approver_secrets, "sre2", clock))],
        via="cli",
    )
    await service.idle()
    assert [r.automatic for r in executor.requests] == [False]
    final = await service.get(view.id)
    assert final.state == "resolved"
    assert final.rule == "manual-rollback"


async def test_approving_a_closed_incident_is_a_conflict(
    service: IncidentService, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(), alert())
    await service.idle()
    with pytest.raises(InvalidTransitionError):
        await service.approve(view.id, "ana", code(approver_secrets, "ana", clock))


async def test_notifications_never_carry_codes(
    service: IncidentService, store: Store, approver_secrets: Secrets, clock: FakeClock
) -> None:
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    c1 = code(approver_secrets, "ana", clock)
    await service.approve(view.id, "ana", c1, comment="go")
    await clock.advance(timedelta(seconds=31).total_seconds())
    c2 = code(approver_secrets, "dan", clock)
    await service.approve(view.id, "dan", c2)
    await service.idle()
    rows = await outbox(store, view.id)
    assert rows
    assert not any(c1 in repr(r.payload) or c2 in repr(r.payload) for r in rows)


async def test_identity_verified_reject_needs_no_code_but_a_known_approver(
    service: IncidentService, executor: FakeExecutor
) -> None:
    """A signed Slack press by a mapped approver may reject (the fail-safe direction); strangers may not."""
    view = await service.on_decision(decision(CTO_AND_DATA), alert())
    assert view.state == "awaiting_approval"
    with pytest.raises(NotPermittedError):
        await service.reject_verified(view.id, "mallory", via="slack")
    rejected = await service.reject_verified(view.id, "ana", via="slack")
    await service.idle()
    assert rejected.state == "rejected"
    assert [(a.approver, a.verdict, a.via) for a in rejected.approvals] == [("ana", "reject", "slack")]
    assert executor.requests == []


async def test_a_decision_without_approval_reaches_the_executor_after_one_commit(
    service: IncidentService, executor: FakeExecutor, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decision latency: group lookup and open → approved → rolling_back are one transaction, and the
    # driver starts from the committed value, so the executor runs right after that one commit.
    transactions: list[str] = []
    real_transaction, real_execute = store.transaction, executor.execute

    @asynccontextmanager
    async def counted() -> AsyncIterator[AsyncSession]:
        transactions.append("tx")
        async with real_transaction() as s:
            yield s

    seen: list[int] = []

    async def execute(req: RollbackRequest) -> RollbackOutcome:
        seen.append(len(transactions))
        return await real_execute(req)

    monkeypatch.setattr(store, "transaction", counted)
    monkeypatch.setattr(executor, "execute", execute)
    view = await service.on_decision(decision(), alert())
    assert view.state == "rolling_back"  # committed so: a restart re-drives it, the executor is idempotent
    timeline = [(e.action, e.detail.get("from"), e.detail.get("to")) for e in view.timeline]
    assert timeline == [("decision", "open", "approved"), ("rollback_started", "approved", "rolling_back")]
    await service.idle()
    assert seen == [1]
    assert executor.requests[0].incident_id == view.id
    rows = [r for r in await outbox(store, view.id) if r.kind in ("opened", "rolling_back")]
    assert sorted({r.kind for r in rows}) == ["opened", "rolling_back"]
    # Every notification of that transaction carries the record as committed.
    assert {r.payload["incident"]["state"] for r in rows} == {"rolling_back"}
    assert (await service.get(view.id)).state == "resolved"
