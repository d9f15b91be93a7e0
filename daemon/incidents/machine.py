"""The incident state machine: pure transitions from (incident, event) to (incident, effects).

``incidents.write`` loads an ``Incident`` (``incidents.state``) from the store,
feeds it one event, persists the new value and carries out the effects (timers,
notifications, the audit entry, the rollback) in the same transaction. Nothing here does I/O or
reads the time: every event carries its own ``at``, so the whole table is
tested in fake time.

States: open → awaiting_approval → approved → rolling_back → verifying →
resolved, with rejected / expired / failed (terminal) and escalated (waiting
for people after a missed deadline). Acknowledgement is a flag, not a state.
``TABLE`` names every (state, event) pair: a handler, or an explicit reason why
the event does not apply there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from daemon.control.hold import SHADOW
from daemon.incidents import events as ev
from daemon.incidents.events import (
    Audit,
    Effect,
    Event,
    Notify,
    SetTimer,
    StartRollback,
    TimerKind,
    cancel_all_timers,
)
from daemon.incidents.state import MANUAL_RULE, PRE_ACTION, TERMINAL, Incident, Policy, State, Vote
from daemon.model import ActionKind, Decision, NotificationKind, OnDeadline

__all__ = [
    "MANUAL_RULE", "TABLE", "Ignored", "Incident", "Policy", "State", "Transition", "Vote", "open_incident",
    "transition",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    """An applied event: the new incident and what must happen because of it."""

    incident: Incident
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event that does not apply in this state. ``invalid``: a caller asked for it (say so)."""

    reason: str
    invalid: bool = False


Result = Transition | Ignored
Handler = Callable[[Incident, Any, Policy], Result]


# --- helpers -------------------------------------------------------------------------------------


def _move(inc: Incident, event: Event, to: State, why: str, *effects: Effect, **changes: Any) -> Transition:
    """The new value plus its audit entry; entering a terminal state cancels every timer."""
    closing = to in TERMINAL and inc.state not in TERMINAL
    new = replace(inc, state=to, updated_at=event.at, closed_at=event.at if closing else inc.closed_at, **changes)
    audit = Audit(action=event.name, actor=event.actor, detail={"from": inc.state.value, "to": to.value, "why": why})
    tail = cancel_all_timers() if closing else ()
    return Transition(new, (audit, *effects, *tail))


def _escalation_timer(inc: Incident, at: datetime, policy: Policy) -> SetTimer:
    delay = policy.escalate_after_s.get(inc.decision.severity, 900.0)
    return SetTimer(TimerKind.ESCALATION, at + timedelta(seconds=delay))


def _start(inc: Incident, event: Event, why: str, *extra: Effect) -> Transition:
    """Approved: run the rollback. The service moves on to rolling_back when it starts."""
    automatic = inc.decision.rule != MANUAL_RULE
    return _move(
        inc,
        event,
        State.APPROVED,
        why,
        ev.CancelTimer(TimerKind.APPROVAL_DEADLINE),
        ev.CancelTimer(TimerKind.ACT_DEADLINE),
        Notify(NotificationKind.APPROVED, f"rollback approved: {why}"),
        StartRollback(reason=why, automatic=automatic),
        *extra,
    )


# --- creation ------------------------------------------------------------------------------------


def open_incident(incident_id: str, decision: Decision, fingerprint: str, at: datetime, policy: Policy) -> Transition:
    """A new incident for ``decision``; where it starts depends on the action and the approval rule."""
    inc = Incident(
        incident_id, decision, State.OPEN, at, at, firing=frozenset({fingerprint}) if fingerprint else frozenset()
    )
    opened = ev.Decided(at=at, actor=f"rule:{decision.rule}", fingerprint=fingerprint)
    timers: list[Effect] = [_escalation_timer(inc, at, policy)]
    if decision.rollback_time_objective_s is not None and inc.action_pending:
        timers.append(SetTimer(TimerKind.OBJECTIVE, at + timedelta(seconds=decision.rollback_time_objective_s)))
    first = Notify(NotificationKind.OPENED, decision.reason or f"{decision.rule} matched")
    if not inc.action_pending:
        why = f"{decision.action.value}: responders are told, nothing is changed"
        return _move(inc, opened, State.OPEN, why, first, *timers)
    req = decision.approval
    if decision.irreversible and not req.required:
        why = "irreversible decision without named approvers: a person must act (break-glass rollback)"
        return _move(inc, opened, State.ESCALATED, why, first, Notify(NotificationKind.ESCALATED, why), *timers)
    if req.required:
        deadlines = [s for s in (req.deadline_s, decision.act_within_s) if s is not None]
        if deadlines:
            timers.append(SetTimer(TimerKind.APPROVAL_DEADLINE, at + timedelta(seconds=min(deadlines))))
        roles = " + ".join(f"{n}x {r}" for r, n in req.roles.items())
        why = f"waiting for approval ({req.mode.value}: {roles})"
        return _move(
            inc, opened, State.AWAITING_APPROVAL, why, first, Notify(NotificationKind.AWAITING_APPROVAL, why), *timers
        )
    if decision.action is ActionKind.ROLLBACK_WITHIN and decision.act_within_s:
        timers.append(SetTimer(TimerKind.ACT_DEADLINE, at + timedelta(seconds=decision.act_within_s)))
        why = f"rollback in {decision.act_within_s:g}s unless the alert clears"
        return _move(inc, opened, State.OPEN, why, first, *timers)
    started = _start(inc, opened, "no approval required")
    return Transition(started.incident, (*started.effects[:1], first, *timers, *started.effects[1:]))


# --- handlers ------------------------------------------------------------------------------------


def _join(inc: Incident, e: ev.Decided, _p: Policy) -> Result:
    if e.fingerprint in inc.firing:
        return Ignored("alert already part of the incident (redelivery)")
    return _move(inc, e, inc.state, f"alert {e.fingerprint} joined", firing=inc.firing | {e.fingerprint})


def _alert_resolved(inc: Incident, e: ev.AlertResolved, _p: Policy) -> Result:
    if e.fingerprint not in inc.firing:
        return Ignored("alert is not firing in this incident")
    firing = inc.firing - {e.fingerprint}
    if not firing and inc.state in PRE_ACTION:
        why = "every alert resolved before any action ran"
        return _move(inc, e, State.RESOLVED, why, Notify(NotificationKind.RESOLVED, why), firing=firing)
    why = f"alert {e.fingerprint} resolved" + ("" if firing else "; the running action continues")
    return _move(inc, e, inc.state, why, firing=firing)


def _approve(inc: Incident, e: ev.Approved, _p: Policy) -> Result:
    if any(v.approver == e.approver for v in inc.approvals):
        return Ignored(f"{e.approver} has already approved this incident", invalid=True)
    if inc.state is State.OPEN:
        if not (inc.action_pending and inc.decision.action is ActionKind.ROLLBACK_WITHIN):
            return Ignored("nothing to approve: this incident only notifies", invalid=True)
        voted = replace(inc, approvals=(Vote(e.approver, e.role, e.at),))
        return _start(voted, e, f"{e.approver} ({e.role}) asked for the rollback now")
    if e.role not in inc.decision.approval.roles:
        return Ignored(f"role {e.role!r} is not one this incident needs", invalid=True)
    new = replace(inc, approvals=(*inc.approvals, Vote(e.approver, e.role, e.at)))
    if new.quorum_met():
        return _start(new, e, f"quorum met ({', '.join(f'{v.approver} as {v.role}' for v in new.approvals)})")
    still = ", ".join(f"{n}x {r}" for r, n in new.missing_roles().items())
    why = f"{e.approver} approved as {e.role}; still needed: {still}"
    return _move(new, e, inc.state, why, Notify(NotificationKind.NOTE, why))


def _reject(inc: Incident, e: ev.Rejected, _p: Policy) -> Result:
    if inc.state is State.OPEN and not inc.action_pending:
        return Ignored("nothing to reject: this incident only notifies", invalid=True)
    why = f"{e.approver} rejected the rollback" + (f": {e.comment}" if e.comment else "")
    return _move(inc, e, State.REJECTED, why, Notify(NotificationKind.REJECTED, why), rejected_by=e.approver)


def _deadline(inc: Incident, e: Event, _p: Policy) -> Result:
    rule = inc.decision.approval.on_deadline
    if rule is OnDeadline.HOLD:
        why = "approval deadline passed; the rule holds the action: it will not run"
        return _move(inc, e, State.EXPIRED, why, Notify(NotificationKind.EXPIRED, why))
    if rule is OnDeadline.PROCEED and not inc.decision.irreversible:
        return _start(inc, e, "approval deadline passed; the rule proceeds without quorum")
    why = "approval deadline passed without quorum; escalating"
    if rule is OnDeadline.PROCEED:
        why = "approval deadline passed; irreversible, so it never proceeds without the named approvers"
    return _move(inc, e, State.ESCALATED, why, Notify(NotificationKind.ESCALATED, why))


def _act_deadline_open(inc: Incident, e: ev.ActDeadlinePassed, _p: Policy) -> Result:
    if not inc.action_pending:
        return Ignored("no action is waiting for a deadline")
    return _start(inc, e, "the act-within window passed and the alert still fires")


def _rollback_started(inc: Incident, e: ev.RollbackStarted, _p: Policy) -> Result:
    why = "rollback started"
    return _move(inc, e, State.ROLLING_BACK, why, Notify(NotificationKind.ROLLING_BACK, why))


def _rollback_finished(inc: Incident, e: ev.RollbackFinished, _p: Policy) -> Result:
    if e.ok:
        why = f"rollback applied: {e.detail}" if e.detail else "rollback applied"
        return _move(inc, e, State.VERIFYING, why, Notify(NotificationKind.VERIFYING, why))
    why = f"rollback failed: {e.detail}"
    return _move(inc, e, State.FAILED, why, Notify(NotificationKind.FAILED, why))


def _rollback_held(inc: Incident, e: ev.RollbackHeld, _p: Policy) -> Result:
    """A guard held the automated rollback: people decide (escalated); a shadow rule only watches (open).

    Both stay open until the alerts clear, so a shadow incident records whether it resolved without
    the rollback, and a held one can still be approved or rolled back by break-glass.
    """
    if e.guard == SHADOW:
        why = f"{e.detail}; watching whether the alerts clear without it"
        return _move(inc, e, State.OPEN, why, ev.CancelTimer(TimerKind.ESCALATION), Notify(NotificationKind.NOTE, why))
    why = f"{e.detail}; a person must decide: roll back by break-glass, or resolve"
    return _move(inc, e, State.ESCALATED, why, Notify(NotificationKind.ESCALATED, why))


def _verified(inc: Incident, e: ev.VerificationPassed, _p: Policy) -> Result:
    why = f"verification passed: {e.detail}" if e.detail else "verification passed"
    return _move(inc, e, State.RESOLVED, why, Notify(NotificationKind.RESOLVED, why))


def _verify_failed(inc: Incident, e: ev.VerificationFailed, _p: Policy) -> Result:
    why = f"verification failed: {e.detail}"
    return _move(inc, e, State.FAILED, why, Notify(NotificationKind.FAILED, why))


def _ack(inc: Incident, e: ev.Acknowledged, _p: Policy) -> Result:
    if inc.acknowledged_by is not None:
        return Ignored(f"already acknowledged by {inc.acknowledged_by}")
    why = f"acknowledged by {e.actor} via {e.via}"
    return _move(
        inc,
        e,
        inc.state,
        why,
        ev.CancelTimer(TimerKind.ESCALATION),
        Notify(NotificationKind.ACKNOWLEDGED, why),
        acknowledged_by=e.actor,
        acknowledged_at=e.at,
    )


def _escalation_due(inc: Incident, e: ev.EscalationDue, p: Policy) -> Result:
    if inc.acknowledged_by is not None:
        return Ignored("acknowledged: no more re-notification")
    n = inc.escalations + 1
    why = f"no acknowledgement yet; re-notifying ({n}/{p.max_escalations})"
    again = (_escalation_timer(inc, e.at, p),) if n < p.max_escalations else ()
    return _move(inc, e, inc.state, why, Notify(NotificationKind.ESCALATED, why), *again, escalations=n)


def _objective(inc: Incident, e: ev.ObjectiveBreached, _p: Policy) -> Result:
    if inc.objective_breached:
        return Ignored("objective breach already notified")
    secs = inc.decision.rollback_time_objective_s or 0
    why = f"rollback-time objective of {secs:g}s breached while {inc.state.value}"
    return _move(inc, e, inc.state, why, Notify(NotificationKind.OBJECTIVE_BREACHED, why), objective_breached=True)


def _manual_resolve(inc: Incident, e: ev.ManualResolve, _p: Policy) -> Result:
    why = f"resolved by {e.actor}" + (f": {e.reason}" if e.reason else "")
    return _move(inc, e, State.RESOLVED, why, Notify(NotificationKind.RESOLVED, why))


def _ignore(reason: str, *, invalid: bool = False) -> Ignored:
    return Ignored(reason, invalid=invalid)


# --- the table -----------------------------------------------------------------------------------

S = State
E = ev
_CLOSED = "the incident is closed"
_NOT_AWAITING = "no approval is pending in this state"
_NO_ROLLBACK = "no rollback is running"
_RUNNING = "a rollback is in progress; wait for its result"
_STALE = "stale timer: the incident moved on"
_NOT_STARTING = "no automated rollback is about to start"


def _closed_row() -> dict[type[Event], Handler | Ignored]:
    return {kind: _ignore(_CLOSED, invalid=kind in (E.Approved, E.Rejected, E.ManualResolve)) for kind in E.EVENT_TYPES}


Row = dict[type[Event], Handler | Ignored]
# What every open state does with alerts, acknowledgements and timers that concern people, not the rollback.
_PEOPLE: Row = {
    E.Decided: _join, E.AlertResolved: _alert_resolved,
    E.Acknowledged: _ack, E.EscalationDue: _escalation_due, E.ObjectiveBreached: _objective,
}  # fmt: skip


def _nothing_ran(started: str) -> Row:
    """Approvals and rejections count; nothing of a rollback can be reported yet."""
    return _PEOPLE | {
        E.Approved: _approve, E.Rejected: _reject, E.ManualResolve: _manual_resolve,
        E.RollbackStarted: _ignore(started, invalid=True),
        E.RollbackFinished: _ignore(_NO_ROLLBACK, invalid=True),
        E.RollbackHeld: _ignore(_NOT_STARTING),
        E.VerificationPassed: _ignore(_NO_ROLLBACK, invalid=True),
        E.VerificationFailed: _ignore(_NO_ROLLBACK, invalid=True),
    }  # fmt: skip


_ROWS: dict[State, Row] = {
    S.OPEN: _nothing_ran("not approved") | {
        E.DeadlinePassed: _ignore(_STALE), E.ActDeadlinePassed: _act_deadline_open,
    },
    S.AWAITING_APPROVAL: _nothing_ran("quorum not met") | {
        E.DeadlinePassed: _deadline, E.ActDeadlinePassed: _deadline,
    },
    # Escalation brings more people in: their approvals still count, and earlier ones stand.
    S.ESCALATED: _nothing_ran("quorum not met") | {
        E.DeadlinePassed: _ignore("already escalated"), E.ActDeadlinePassed: _ignore("already escalated"),
    },
    S.APPROVED: _PEOPLE | {
        E.Approved: _ignore("already approved", invalid=True),
        E.Rejected: _ignore("already approved; the rollback is starting", invalid=True),
        E.DeadlinePassed: _ignore(_STALE), E.ActDeadlinePassed: _ignore(_STALE),
        E.RollbackStarted: _rollback_started,
        E.RollbackHeld: _rollback_held,
        E.RollbackFinished: _ignore("the rollback has not started", invalid=True),
        E.VerificationPassed: _ignore(_NO_ROLLBACK, invalid=True),
        E.VerificationFailed: _ignore(_NO_ROLLBACK, invalid=True),
        E.ManualResolve: _manual_resolve,
    },
    S.ROLLING_BACK: _PEOPLE | {
        E.Approved: _ignore(_RUNNING, invalid=True), E.Rejected: _ignore(_RUNNING, invalid=True),
        E.DeadlinePassed: _ignore(_STALE), E.ActDeadlinePassed: _ignore(_STALE),
        E.RollbackStarted: _ignore("already rolling back (a resumed attempt)"),
        E.RollbackFinished: _rollback_finished,
        E.RollbackHeld: _rollback_held,  # recorded before the executor wrote anything (incidents.driver)
        E.VerificationPassed: _ignore("the rollback has not finished", invalid=True),
        E.VerificationFailed: _ignore("the rollback has not finished", invalid=True),
        E.ManualResolve: _ignore(_RUNNING, invalid=True),
    },
    S.VERIFYING: _PEOPLE | {
        E.Approved: _ignore("the rollback already ran", invalid=True),
        E.Rejected: _ignore("the rollback already ran", invalid=True),
        E.DeadlinePassed: _ignore(_STALE), E.ActDeadlinePassed: _ignore(_STALE),
        E.RollbackStarted: _ignore("the rollback already ran"),
        E.RollbackFinished: _ignore("the rollback already finished"),
        E.RollbackHeld: _ignore(_NOT_STARTING),
        E.VerificationPassed: _verified, E.VerificationFailed: _verify_failed,
        E.ManualResolve: _manual_resolve,
    },
    S.RESOLVED: _closed_row(),
    S.REJECTED: _closed_row(),
    S.EXPIRED: _closed_row(),
    S.FAILED: _closed_row(),
}  # fmt: skip
TABLE: Mapping[tuple[State, type[Event]], Handler | Ignored] = MappingProxyType(
    {(state, kind): entry for state, row in _ROWS.items() for kind, entry in row.items()}
)


def transition(inc: Incident, event: Event, policy: Policy) -> Result:
    """Apply ``event`` to ``inc`` by the table."""
    entry = TABLE[(inc.state, type(event))]
    if isinstance(entry, Ignored):
        return entry
    return entry(inc, event, policy)
