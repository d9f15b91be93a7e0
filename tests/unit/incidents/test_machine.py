"""The incident state machine, exhaustively and without I/O, in fake time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from daemon.incidents import events as ev
from daemon.incidents.machine import (
    TABLE,
    TERMINAL,
    Ignored,
    Incident,
    Policy,
    State,
    Transition,
    Vote,
    open_incident,
    transition,
)
from daemon.model import (
    ActionKind,
    ApprovalRequirement,
    Decision,
    NotificationKind,
    OnDeadline,
    QuorumMode,
    Severity,
    Target,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy()
WEB = Target("shop", "web")


def decision(
    action: ActionKind = ActionKind.ROLLBACK_NOW,
    roles: dict[str, int] | None = None,
    *,
    mode: QuorumMode = QuorumMode.ALL_OF,
    deadline_s: float | None = 600,
    on_deadline: OnDeadline = OnDeadline.ESCALATE,
    act_within_s: float | None = None,
    rto: float | None = 600,
    irreversible: bool = False,
) -> Decision:
    return Decision(
        rule="data-corruption",
        severity=Severity.P0,
        action=action,
        targets=(WEB,),
        approval=ApprovalRequirement(MappingProxyType(roles or {}), mode, deadline_s, on_deadline),
        act_within_s=act_within_s,
        rollback_time_objective_s=rto,
        irreversible=irreversible,
        reason="checksum mismatch",
    )


CTO_AND_DATA = {"cto": 1, "data-lead": 1}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def opened(d: Decision) -> Transition:
    return open_incident("i1", d, "fp1", T0, POLICY)


def apply(inc: Incident, event: ev.Event) -> Transition:
    result = transition(inc, event, POLICY)
    assert isinstance(result, Transition), result
    return result


def kinds(t: Transition, effect: type) -> list:
    return [e for e in t.effects if isinstance(e, effect)]


def notified(t: Transition) -> list[NotificationKind]:
    return [n.kind for n in kinds(t, ev.Notify)]


def in_state(state: State, d: Decision | None = None, **changes: object) -> Incident:
    base = Incident("i1", d or decision(roles=CTO_AND_DATA), state, T0, T0, firing=frozenset({"fp1"}))
    return replace(base, **changes)  # type: ignore[arg-type]


def sample_event(kind: type[ev.Event], when: datetime = T0) -> ev.Event:
    samples: dict[type[ev.Event], ev.Event] = {
        ev.Decided: ev.Decided(at=when, fingerprint="fp2"),
        ev.AlertResolved: ev.AlertResolved(at=when, fingerprint="fp1"),
        ev.Approved: ev.Approved(at=when, approver="ana", role="cto"),
        ev.Rejected: ev.Rejected(at=when, approver="ana", role="cto"),
        ev.RollbackFinished: ev.RollbackFinished(at=when, ok=True),
        ev.RollbackHeld: ev.RollbackHeld(at=when, guard="pause", detail="automation paused by sre1 (test)"),
    }
    return samples.get(kind) or kind(at=when)


# --- the table is exhaustive ---------------------------------------------------------------------


def test_every_state_event_pair_has_an_entry_with_a_reason_or_handler() -> None:
    for state in State:
        for kind in ev.EVENT_TYPES:
            entry = TABLE[(state, kind)]
            if isinstance(entry, Ignored):
                assert entry.reason, (state, kind)
            else:
                assert callable(entry), (state, kind)
    assert len(TABLE) == len(State) * len(ev.EVENT_TYPES)


@pytest.mark.parametrize("state", sorted(State))
@pytest.mark.parametrize("kind", ev.EVENT_TYPES, ids=lambda k: k.name)
def test_every_pair_either_transitions_with_an_audit_or_is_ignored_unchanged(state: State, kind: type) -> None:
    inc = in_state(state)
    result = transition(inc, sample_event(kind, at(1)), POLICY)
    if isinstance(result, Ignored):
        assert result.reason
        return
    assert state not in TERMINAL, "a closed incident never changes"
    audits = kinds(result, ev.Audit)
    assert len(audits) == 1
    assert audits[0].detail["from"] == state.value
    assert audits[0].detail["to"] == result.incident.state.value
    assert result.incident.updated_at == at(1)
    if result.incident.state in TERMINAL:
        assert {c.kind for c in kinds(result, ev.CancelTimer)} == set(ev.TimerKind)
        assert result.incident.closed_at == at(1)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_closed_incidents_refuse_people_and_ignore_timers(state: State) -> None:
    inc = in_state(state)
    approve = transition(inc, sample_event(ev.Approved), POLICY)
    assert isinstance(approve, Ignored)
    assert approve.invalid
    timer = transition(inc, ev.EscalationDue(at=T0), POLICY)
    assert isinstance(timer, Ignored)
    assert not timer.invalid


# --- opening -------------------------------------------------------------------------------------


def test_rollback_now_without_approval_is_approved_and_starts_at_once() -> None:
    t = opened(decision())
    assert t.incident.state is State.APPROVED
    assert kinds(t, ev.StartRollback)
    assert NotificationKind.OPENED in notified(t)
    timers = {s.kind: s.due for s in kinds(t, ev.SetTimer)}
    assert timers[ev.TimerKind.OBJECTIVE] == at(600)
    assert timers[ev.TimerKind.ESCALATION] == at(300)  # P0 pages again after 5 minutes without an ack


def test_rollback_now_with_approval_waits_for_quorum_until_the_deadline() -> None:
    t = opened(decision(roles=CTO_AND_DATA))
    assert t.incident.state is State.AWAITING_APPROVAL
    assert not kinds(t, ev.StartRollback)
    assert notified(t) == [NotificationKind.OPENED, NotificationKind.AWAITING_APPROVAL]
    assert ev.SetTimer(ev.TimerKind.APPROVAL_DEADLINE, at(600)) in t.effects


def test_rollback_within_without_approval_waits_for_the_act_window() -> None:
    t = opened(decision(ActionKind.ROLLBACK_WITHIN, act_within_s=900))
    assert t.incident.state is State.OPEN
    assert ev.SetTimer(ev.TimerKind.ACT_DEADLINE, at(900)) in t.effects
    fired = apply(t.incident, ev.ActDeadlinePassed(at=at(900)))
    assert fired.incident.state is State.APPROVED
    assert kinds(fired, ev.StartRollback)


def test_rollback_within_with_approval_uses_the_earlier_deadline() -> None:
    t = opened(decision(ActionKind.ROLLBACK_WITHIN, {"eng-lead": 1}, deadline_s=1200, act_within_s=900))
    assert ev.SetTimer(ev.TimerKind.APPROVAL_DEADLINE, at(900)) in t.effects


def test_notify_only_opens_without_action_and_resolves_with_the_alert() -> None:
    t = opened(decision(ActionKind.NOTIFY))
    assert t.incident.state is State.OPEN
    assert not kinds(t, ev.StartRollback)
    assert not any(s.kind is ev.TimerKind.OBJECTIVE for s in kinds(t, ev.SetTimer))
    done = apply(t.incident, ev.AlertResolved(at=at(60), fingerprint="fp1"))
    assert done.incident.state is State.RESOLVED
    assert NotificationKind.RESOLVED in notified(done)
    reject = transition(t.incident, sample_event(ev.Rejected), POLICY)
    assert isinstance(reject, Ignored)
    assert reject.invalid


def test_irreversible_without_named_approvers_escalates_at_once() -> None:
    t = opened(decision(irreversible=True))
    assert t.incident.state is State.ESCALATED
    assert not kinds(t, ev.StartRollback)


# --- approvals and quorum -------------------------------------------------------------------------


def test_two_role_quorum_blocks_until_both_roles_approved() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    one = apply(inc, ev.Approved(at=at(10), approver="ana", role="cto"))
    assert one.incident.state is State.AWAITING_APPROVAL
    assert not kinds(one, ev.StartRollback)
    assert one.incident.missing_roles() == {"data-lead": 1}
    again = transition(one.incident, ev.Approved(at=at(11), approver="ana", role="cto"), POLICY)
    assert isinstance(again, Ignored)
    assert again.invalid
    two = apply(one.incident, ev.Approved(at=at(20), approver="dan", role="data-lead"))
    assert two.incident.state is State.APPROVED
    assert kinds(two, ev.StartRollback)
    assert ev.CancelTimer(ev.TimerKind.APPROVAL_DEADLINE) in two.effects


def test_any_of_quorum_is_met_by_one_role() -> None:
    inc = opened(decision(roles={"eng-lead": 1, "cto": 1}, mode=QuorumMode.ANY_OF)).incident
    t = apply(inc, ev.Approved(at=at(5), approver="eve", role="eng-lead"))
    assert t.incident.state is State.APPROVED


def test_approval_for_a_role_not_needed_is_invalid() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    result = transition(inc, ev.Approved(at=at(5), approver="pam", role="product-owner"), POLICY)
    assert isinstance(result, Ignored)
    assert result.invalid


def test_a_rejection_stops_the_action() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    t = apply(inc, ev.Rejected(at=at(5), approver="ana", role="cto", comment="fix forward"))
    assert t.incident.state is State.REJECTED
    assert t.incident.rejected_by == "ana"
    assert not kinds(t, ev.StartRollback)
    assert NotificationKind.REJECTED in notified(t)


def test_approval_in_open_expedites_a_rollback_within() -> None:
    inc = opened(decision(ActionKind.ROLLBACK_WITHIN, act_within_s=900)).incident
    t = apply(inc, ev.Approved(at=at(5), approver="eve", role="eng-lead"))
    assert t.incident.state is State.APPROVED
    assert t.incident.approvals == (Vote("eve", "eng-lead", at(5)),)


# --- deadlines -----------------------------------------------------------------------------------


def test_deadline_escalates_and_later_approvals_still_count() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    inc = apply(inc, ev.Approved(at=at(10), approver="ana", role="cto")).incident
    t = apply(inc, ev.DeadlinePassed(at=at(600)))
    assert t.incident.state is State.ESCALATED
    assert notified(t) == [NotificationKind.ESCALATED]
    late = apply(t.incident, ev.Approved(at=at(700), approver="dan", role="data-lead"))
    assert late.incident.state is State.APPROVED


def test_deadline_with_hold_expires_and_the_action_never_runs() -> None:
    inc = opened(decision(roles={"cto": 1}, on_deadline=OnDeadline.HOLD)).incident
    t = apply(inc, ev.DeadlinePassed(at=at(600)))
    assert t.incident.state is State.EXPIRED
    assert not kinds(t, ev.StartRollback)
    late = transition(t.incident, ev.Approved(at=at(601), approver="ana", role="cto"), POLICY)
    assert isinstance(late, Ignored)
    assert late.invalid


def test_deadline_with_proceed_rolls_back_without_quorum() -> None:
    inc = opened(decision(roles={"eng-lead": 1}, on_deadline=OnDeadline.PROCEED)).incident
    t = apply(inc, ev.DeadlinePassed(at=at(600)))
    assert t.incident.state is State.APPROVED
    assert kinds(t, ev.StartRollback)


def test_irreversible_never_proceeds_on_deadline_even_when_the_rule_says_proceed() -> None:
    inc = opened(decision(roles={"cto": 1}, on_deadline=OnDeadline.PROCEED, irreversible=True)).incident
    t = apply(inc, ev.DeadlinePassed(at=at(600)))
    assert t.incident.state is State.ESCALATED
    assert not kinds(t, ev.StartRollback)


def test_act_deadline_in_awaiting_approval_follows_the_deadline_rule() -> None:
    inc = opened(decision(ActionKind.ROLLBACK_WITHIN, {"eng-lead": 1}, act_within_s=900)).incident
    assert apply(inc, ev.ActDeadlinePassed(at=at(900))).incident.state is State.ESCALATED


# --- rollback and verification -------------------------------------------------------------------


def test_rollback_path_to_resolved() -> None:
    inc = opened(decision()).incident
    rolling = apply(inc, ev.RollbackStarted(at=at(1)))
    assert rolling.incident.state is State.ROLLING_BACK
    again = transition(rolling.incident, ev.RollbackStarted(at=at(2)), POLICY)
    assert isinstance(again, Ignored)
    assert not again.invalid
    verifying = apply(rolling.incident, ev.RollbackFinished(at=at(30), ok=True, detail="shop/web rolled_back"))
    assert verifying.incident.state is State.VERIFYING
    done = apply(verifying.incident, ev.VerificationPassed(at=at(60)))
    assert done.incident.state is State.RESOLVED
    assert ev.CancelTimer(ev.TimerKind.OBJECTIVE) in done.effects


def test_failed_rollback_and_failed_verification_end_failed() -> None:
    rolling = in_state(State.ROLLING_BACK)
    failed = apply(rolling, ev.RollbackFinished(at=at(5), ok=False, detail="no previous revision"))
    assert failed.incident.state is State.FAILED
    assert NotificationKind.FAILED in notified(failed)
    bad = apply(in_state(State.VERIFYING), ev.VerificationFailed(at=at(5), detail="error rate 9%"))
    assert bad.incident.state is State.FAILED


def test_alert_resolving_during_a_rollback_does_not_interrupt_it() -> None:
    t = apply(in_state(State.ROLLING_BACK), ev.AlertResolved(at=at(5), fingerprint="fp1"))
    assert t.incident.state is State.ROLLING_BACK
    assert t.incident.firing == frozenset()


def test_alert_resolving_keeps_the_incident_while_another_alert_fires() -> None:
    inc = in_state(State.AWAITING_APPROVAL, firing=frozenset({"fp1", "fp2"}))
    t = apply(inc, ev.AlertResolved(at=at(5), fingerprint="fp1"))
    assert t.incident.state is State.AWAITING_APPROVAL
    assert t.incident.firing == frozenset({"fp2"})


def test_manual_resolve_is_refused_during_a_rollback() -> None:
    result = transition(in_state(State.ROLLING_BACK), ev.ManualResolve(at=T0), POLICY)
    assert isinstance(result, Ignored)
    assert result.invalid


# --- acknowledgement, escalation, objective ------------------------------------------------------


def test_ack_stops_escalation_and_is_idempotent() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    t = apply(inc, ev.Acknowledged(at=at(30), actor="oncall", via="slack"))
    assert t.incident.state is State.AWAITING_APPROVAL  # a flag, not a state
    assert t.incident.acknowledged_by == "oncall"
    assert ev.CancelTimer(ev.TimerKind.ESCALATION) in t.effects
    assert notified(t) == [NotificationKind.ACKNOWLEDGED]
    again = transition(t.incident, ev.Acknowledged(at=at(40), actor="other"), POLICY)
    assert isinstance(again, Ignored)
    assert not again.invalid
    late = transition(t.incident, ev.EscalationDue(at=at(300)), POLICY)
    assert isinstance(late, Ignored)


def test_escalation_re_notifies_a_bounded_number_of_times() -> None:
    inc = opened(decision(ActionKind.NOTIFY)).incident
    sent = 0
    for n in range(1, POLICY.max_escalations + 1):
        t = apply(inc, ev.EscalationDue(at=at(300 * n)))
        sent += notified(t).count(NotificationKind.ESCALATED)
        rearmed = kinds(t, ev.SetTimer)
        assert bool(rearmed) == (n < POLICY.max_escalations)
        inc = t.incident
    assert sent == POLICY.max_escalations
    assert inc.state is State.OPEN


def test_objective_breach_is_notified_once() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    t = apply(inc, ev.ObjectiveBreached(at=at(600)))
    assert notified(t) == [NotificationKind.OBJECTIVE_BREACHED]
    assert t.incident.objective_breached
    assert isinstance(transition(t.incident, ev.ObjectiveBreached(at=at(601)), POLICY), Ignored)


def test_join_adds_an_alert_and_a_redelivery_is_ignored() -> None:
    inc = opened(decision(roles=CTO_AND_DATA)).incident
    t = apply(inc, ev.Decided(at=at(5), fingerprint="fp2"))
    assert t.incident.firing == frozenset({"fp1", "fp2"})
    assert isinstance(transition(t.incident, ev.Decided(at=at(6), fingerprint="fp2"), POLICY), Ignored)


def test_incident_round_trips_through_json() -> None:
    inc = apply(opened(decision(roles=CTO_AND_DATA)).incident, ev.Approved(at=at(3), approver="ana", role="cto"))
    assert Incident.from_json(inc.incident.to_json()) == inc.incident
