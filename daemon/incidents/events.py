"""The inputs and outputs of the incident state machine: events in, effects out.

Events are what happened (an alert joined, an approver approved, a timer
fired); each carries its time and who or what caused it. Effects are what the
service must do about a transition: write an audit entry, queue a
notification, set or cancel a timer, start the rollback. All are frozen,
plain values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from daemon.model import NotificationKind


class TimerKind(enum.StrEnum):
    APPROVAL_DEADLINE = "approval_deadline"
    ACT_DEADLINE = "act_deadline"
    ESCALATION = "escalation"
    OBJECTIVE = "objective"


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    at: datetime
    actor: str = "rollbackd"
    name: ClassVar[str] = "event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decided(Event):
    """The rules decided on an alert: a new incident, or one more alert for an open one."""

    fingerprint: str
    name: ClassVar[str] = "decision"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertResolved(Event):
    fingerprint: str
    name: ClassVar[str] = "alert_resolved"


@dataclass(frozen=True, slots=True, kw_only=True)
class Approved(Event):
    """A verified approval (the code was checked before this event exists)."""

    approver: str
    role: str
    via: str = "api"
    name: ClassVar[str] = "approval"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected(Event):
    approver: str
    role: str
    via: str = "api"
    comment: str = ""
    name: ClassVar[str] = "rejection"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlinePassed(Event):
    name: ClassVar[str] = "deadline_passed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActDeadlinePassed(Event):
    name: ClassVar[str] = "act_deadline_passed"


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackStarted(Event):
    name: ClassVar[str] = "rollback_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackFinished(Event):
    ok: bool
    detail: str = ""
    results: tuple[Mapping[str, Any], ...] = ()
    name: ClassVar[str] = "rollback_finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackHeld(Event):
    """An automated rollback was about to start, and a guard (``daemon.control``) held it: nothing was written.

    ``guard`` names it (pause, freeze, one_attempt, shadow); ``detail`` is the sentence people read.
    """

    guard: str
    detail: str
    name: ClassVar[str] = "rollback_held"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationPassed(Event):
    detail: str = ""
    name: ClassVar[str] = "verification_passed"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationFailed(Event):
    detail: str = ""
    name: ClassVar[str] = "verification_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledged(Event):
    via: str = "api"
    name: ClassVar[str] = "acknowledged"


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationDue(Event):
    name: ClassVar[str] = "escalation_due"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectiveBreached(Event):
    name: ClassVar[str] = "objective_breached"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualResolve(Event):
    reason: str = ""
    name: ClassVar[str] = "manual_resolve"


EVENT_TYPES: tuple[type[Event], ...] = (
    Decided,
    AlertResolved,
    Approved,
    Rejected,
    DeadlinePassed,
    ActDeadlinePassed,
    RollbackStarted,
    RollbackFinished,
    RollbackHeld,
    VerificationPassed,
    VerificationFailed,
    Acknowledged,
    EscalationDue,
    ObjectiveBreached,
    ManualResolve,
)

TIMER_EVENTS: Mapping[TimerKind, type[Event]] = {
    TimerKind.APPROVAL_DEADLINE: DeadlinePassed,
    TimerKind.ACT_DEADLINE: ActDeadlinePassed,
    TimerKind.ESCALATION: EscalationDue,
    TimerKind.OBJECTIVE: ObjectiveBreached,
}


# --- effects -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audit:
    action: str
    actor: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notify:
    kind: NotificationKind
    summary: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: TimerKind
    due: datetime


@dataclass(frozen=True, slots=True)
class CancelTimer:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class StartRollback:
    reason: str
    automatic: bool = True


Effect = Audit | Notify | SetTimer | CancelTimer | StartRollback


def cancel_all_timers() -> tuple[CancelTimer, ...]:
    return tuple(CancelTimer(k) for k in TimerKind)
