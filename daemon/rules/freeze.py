"""Freeze windows of the rule files: when automated rollback is blocked or needs one more approval role.

Part of the rules stage. ``compile_window`` turns a checked ``FreezeWindowDef``
into a ``FreezeWindow`` (or the errors ``rules check`` reports: an unknown
time zone, a bad scope, a date range that ends before it starts, a role no file
declares). Evaluation is pure, at a time it is given, so ``rules test --at``
and the fake clock see exactly what the daemon sees:

- ``with_freeze`` is applied as a decision is made (``pipeline``, ``rules
  test``): a ``require_approval`` window in force adds its role to the
  decision's approval, so the rollback waits for that person's code;
- ``blocking`` is asked by the automation guard (``control.guard``) right
  before an automated rollback starts: a ``block`` window in force holds it.

``rules export`` emits nothing for windows: they are rollbackd's, not Prometheus'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.model import ApprovalRequirement, Decision, OnDeadline, QuorumMode
from daemon.rules.compiled import merge_guard
from daemon.rules.schema import FreezeWindowDef
from daemon.scope import Scope

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Weekly:
    days: frozenset[int]  # 0 = Monday, as ``date.weekday()``
    start: time
    end: time  # at or before ``start``: the window ends the next day


@dataclass(frozen=True, slots=True)
class FreezeWindow:
    """One compiled window; ``until`` answers whether it is in force at a time, and until when."""

    name: str
    description: str
    scope: Scope
    tz: ZoneInfo
    weekly: tuple[Weekly, ...]
    dates: tuple[tuple[datetime, datetime], ...]  # aware, in ``tz``
    effect: str  # block | require_approval
    approval_role: str | None

    def until(self, now: datetime) -> datetime | None:
        """The end of the occurrence in force at ``now`` (aware, UTC), or None outside every occurrence."""
        local = now.astimezone(self.tz)
        ends = [end for start, end in self.dates if start <= local < end]
        for w in self.weekly:
            for back in (0, 1):  # today's occurrence, or yesterday's that runs past midnight
                day = local.date() - timedelta(days=back)
                if day.weekday() not in w.days:
                    continue
                start = datetime.combine(day, w.start, self.tz)
                end = datetime.combine(day + timedelta(days=1 if w.end <= w.start else 0), w.end, self.tz)
                if start <= local < end:
                    ends.append(end)
        return max(ends).astimezone(ZoneInfo("UTC")) if ends else None

    def describe(self, until: datetime) -> str:
        why = f" ({self.description})" if self.description else ""
        return f"freeze window {self.name}{why} until {until:%Y-%m-%d %H:%M UTC}"


@dataclass(frozen=True, slots=True)
class FreezeHit:
    window: FreezeWindow
    until: datetime

    def describe(self) -> str:
        return self.window.describe(self.until)


def in_force(
    windows: Sequence[FreezeWindow], decision: Decision, now: datetime, *, effect: str | None = None
) -> FreezeHit | None:
    """The first window covering ``decision`` and in force at ``now`` (of ``effect``, when given)."""
    for w in windows:
        if effect is not None and w.effect != effect:
            continue
        if not w.scope.covers(decision.rule, decision.targets):
            continue
        until = w.until(now)
        if until is not None:
            return FreezeHit(w, until)
    return None


def blocking(windows: Sequence[FreezeWindow], decision: Decision, now: datetime) -> FreezeHit | None:
    """A ``block`` window that holds ``decision``'s automated rollback at ``now``."""
    return in_force(windows, decision, now, effect="block")


def with_freeze(decision: Decision, windows: Sequence[FreezeWindow], now: datetime) -> Decision:
    """``decision`` with the approval role of each ``require_approval`` window in force at ``now``."""
    if decision.action.value not in ("rollback_now", "rollback_within"):
        return decision
    approval, reasons = decision.approval, []
    for w in windows:
        until = w.until(now)
        if w.effect != "require_approval" or w.approval_role is None or until is None:
            continue
        if not w.scope.covers(decision.rule, decision.targets):
            continue
        extra = ApprovalRequirement(
            MappingProxyType({w.approval_role: 1}), QuorumMode.ALL_OF, None, OnDeadline.ESCALATE
        )
        approval = merge_guard(approval, extra)
        reasons.append(f"{w.describe(until)} needs approval by {w.approval_role}")
    if not reasons:
        return decision
    reason = "; ".join([decision.reason, *reasons]) if decision.reason else "; ".join(reasons)
    return replace(decision, approval=approval, reason=reason)


def compile_window(d: FreezeWindowDef, roles: frozenset[str]) -> FreezeWindow | list[tuple[Loc, str]]:
    """The compiled window, or each problem with the field it is about (relative to the window)."""
    errors: list[tuple[Loc, str]] = []
    tz: ZoneInfo | None = None
    try:
        tz = ZoneInfo(d.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append((("time_zone",), f"found {d.time_zone!r}, expected an IANA time zone such as Europe/Berlin"))
    try:
        scope = Scope.parse(d.scope)
    except ValueError as exc:
        errors.append((("scope",), str(exc)))
    if d.approval_role is not None and d.approval_role not in roles:
        errors.append((("approval_role",), f"role {d.approval_role!r} is not declared in any file's roles"))
    weekly = []
    for i, w in enumerate(d.weekly):
        start, end = time.fromisoformat(w.start), time.fromisoformat(w.end)
        if start == end:
            errors.append((("weekly", i), "'from' and 'to' are the same time: a window of 24 hours? say 00:00-23:59"))
        weekly.append(Weekly(frozenset(DAYS.index(day) for day in w.days), start, end))
    dates = []
    for i, r in enumerate(d.dates):
        if r.start.tzinfo is not None or r.end.tzinfo is not None:
            errors.append((("dates", i), "give local times without an offset: the window's time_zone applies"))
        elif r.end <= r.start:
            errors.append((("dates", i), f"ends ({r.end:%Y-%m-%d %H:%M}) before it starts ({r.start:%Y-%m-%d %H:%M})"))
        elif tz is not None:
            dates.append((r.start.replace(tzinfo=tz), r.end.replace(tzinfo=tz)))
    if errors or tz is None:
        return errors
    return FreezeWindow(d.name, d.description, scope, tz, tuple(weekly), tuple(dates), d.effect, d.approval_role)
