"""The guard the rollback driver asks before an automated rollback starts: may it run, and if not, why.

Part of automation control. ``incidents.driver`` calls ``AutomationGuard.check``
with the decision of an approved incident whose rollback the rules (not a
person's break-glass request) asked for, right before it would start. The
answer is ``None`` (go on) or a ``Hold`` naming the guard and the sentence
people read: a shadow rule (or a namespace configured as shadow), a pause in
force, a freeze window that blocks now. The active pauses are read from the
store at that moment, so a pause committed by any replica holds here.

Then the driver dry-runs the undo on the API server (the plan is checked, the
cluster untouched) and records the hold with the incident's change; ``record``
writes the row the shadow report reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.clock import Clock
from daemon.control.hold import FREEZE, PAUSE, SHADOW, Hold
from daemon.control.pauses import Pause, Pauses, PauseWatcher
from daemon.metrics import AUTOMATION_HELD
from daemon.model import Decision
from daemon.rules.freeze import FreezeWindow, blocking
from daemon.store.db import Store
from daemon.store.tables import HoldRow, RollbackIntentRow

# What freeze windows say of a decision at a time (``rules``' windows): a Hold, or None.
FreezeCheck = Callable[[Decision, datetime], Hold | None]


def freeze_check(windows: Callable[[], Sequence[FreezeWindow]]) -> FreezeCheck:
    """The guard's question to the rule set in force: does a ``block`` window hold this decision now?"""

    def check(decision: Decision, now: datetime) -> Hold | None:
        hit = blocking(windows(), decision, now)
        return Hold(FREEZE, hit.describe()) if hit is not None else None

    return check


def paused_detail(pause: Pause) -> str:
    until = pause.until.strftime("%Y-%m-%d %H:%M UTC")
    return f"automation paused by {pause.created_by} ({pause.reason}) until {until} [pause {pause.id}, {pause.scope}]"


class AutomationGuard:
    """Shadow mode, pauses and freeze windows, asked in that order (a shadow rule never writes anyway)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        pauses: Pauses,
        *,
        watcher: PauseWatcher | None = None,
        freeze: FreezeCheck | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._pauses = pauses
        self._watcher = watcher
        self._freeze = freeze

    def may_hold(self, decision: Decision) -> bool:
        """Whether ``check`` might hold ``decision``, from this replica's view (no I/O; at most a second old).

        The writer then leaves the incident approved instead of folding the start into its
        transaction, so no "rollback started" is announced for a rollback that will be held.
        A view that is behind only costs that notice: ``check`` itself reads the store.
        """
        if decision.shadow:
            return True
        if self._watcher is not None and any(p.covers(decision.rule, decision.targets) for p in self._watcher.current):
            return True
        return self._freeze is not None and self._freeze(decision, self._clock.now()) is not None

    async def check(self, decision: Decision, *, unless_started: str | None = None) -> Hold | None:
        """The hold on ``decision`` now, or None; with ``unless_started``, None too once that incident's undo began.

        An incident the opening transaction moved to rolling back has not started as long as the
        executor recorded no real intent for it; a rollback under way is never held half-way. Both
        questions are one transaction: each is a store round trip on the way to the patch (issue 19).
        """
        async with self._store.transaction("automation guard") as s:
            if unless_started is not None and await _started(s, unless_started):
                return None
            if decision.shadow:
                return Hold(SHADOW, f"shadow rule {decision.rule}: decided and dry-run only")
            for pause in await self._pauses.active(s):
                if pause.covers(decision.rule, decision.targets):
                    return Hold(PAUSE, paused_detail(pause))
        if self._freeze is not None:
            return self._freeze(decision, self._clock.now())
        return None

    def record(
        self, s: AsyncSession, incident_id: str, decision: Decision, hold: Hold, would: Mapping[str, Any]
    ) -> None:
        """The held decision, in the transaction that records the hold on the incident."""
        AUTOMATION_HELD.labels(guard=hold.guard).inc()
        s.add(
            HoldRow(
                incident_id=incident_id, rule=decision.rule, guard=hold.guard, detail=hold.detail, would=dict(would),
                at=self._clock.now(),
            )
        )  # fmt: skip


async def _started(s: AsyncSession, incident_id: str) -> bool:
    """Whether the executor recorded an intent (a real, non-dry-run undo) for the incident."""
    query = select(RollbackIntentRow.id).where(
        RollbackIntentRow.incident_id == incident_id, RollbackIntentRow.dry_run.is_(False)
    )
    return (await s.execute(query.limit(1))).first() is not None
