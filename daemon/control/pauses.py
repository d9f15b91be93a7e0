"""The kill switch: pauses of automated rollback, persisted, audited and expiring by themselves.

Part of automation control. A pause covers a ``Scope`` (everything, a
namespace, one workload, one rule) from its creation until ``until`` or until
someone resumes it. Creating and resuming write, in one transaction, the pause
row, an audit entry (who, why, until when) and a notice for the Slack channel
through the outbox, so the notice exists if and only if the change does.

Nothing is cached for the decision: ``AutomationGuard`` (``control.guard``)
reads the active pauses from the store right before an automated rollback
would start, so a pause committed by any replica holds on the leader from its
commit on. ``PauseWatcher`` keeps each replica's own view (for ``/readyz``,
``rollbackd status`` and the ``rollbackd_automation_pauses`` gauge) at most a
second old, and wakes at once on PostgreSQL's NOTIFY (another replica's change)
and on ``Pauses.changed`` (this replica's own, on either store).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from daemon.clock import Clock
from daemon.errors import InputError, RollbackdError
from daemon.logs import get_logger
from daemon.metrics import AUTOMATION_PAUSES
from daemon.scope import Scope, ScopeKind
from daemon.store.db import Store
from daemon.store.listen import notify
from daemon.store.tables import AuditRow, OutboxRow, PauseRow
from daemon.target import Target

log = get_logger(__name__)

CONTROL_CHANNEL = "rollbackd_control"  # PostgreSQL NOTIFY channel: a pause changed
AUTOMATION_SLACK = "slack-automation"  # outbox channel: pause and resume notices for the Slack channel
MAX_PAUSE = timedelta(days=7)
WATCH_POLL_S = 1.0


class PauseError(InputError):
    """A pause or resume that cannot be done as asked (unknown id, bad duration)."""


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause, as stored; ``active_at`` says whether it holds at a given time."""

    id: str
    scope: Scope
    reason: str
    created_by: str
    created_at: datetime
    until: datetime
    resumed_at: datetime | None = None
    resumed_by: str | None = None

    def active_at(self, now: datetime) -> bool:
        return self.resumed_at is None and now < self.until

    def covers(self, rule: str, targets: Sequence[Target]) -> bool:
        return self.scope.covers(rule, targets)

    def status(self, now: datetime) -> str:
        if self.resumed_at is not None:
            return f"resumed by {self.resumed_by}"
        return "active" if now < self.until else "expired"

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": str(self.scope),
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "until": self.until.isoformat(),
            "resumed_at": self.resumed_at.isoformat() if self.resumed_at else None,
            "resumed_by": self.resumed_by,
            "active": self.active_at(now),
            "status": self.status(now),
        }

    @classmethod
    def from_row(cls, row: PauseRow) -> Pause:
        return cls(
            id=row.id, scope=Scope(ScopeKind(row.scope), row.value), reason=row.reason, created_by=row.created_by,
            created_at=row.created_at, until=row.until, resumed_at=row.resumed_at, resumed_by=row.resumed_by,
        )  # fmt: skip


def _active(now: datetime) -> Any:
    return (PauseRow.resumed_at.is_(None)) & (PauseRow.until > now)


class Pauses:
    """Create, resume and list pauses; ``channels`` are the outbox channels served (Slack notices need one)."""

    def __init__(self, store: Store, clock: Clock, *, channels: Sequence[str] = ()) -> None:
        self._store = store
        self._clock = clock
        self._notice = AUTOMATION_SLACK in channels
        self.changed: Callable[[], None] | None = None  # after a commit: this replica's watcher refreshes at once

    async def pause(self, scope: Scope, reason: str, by: str, duration: timedelta) -> Pause:
        """A new pause of ``scope`` for ``duration``, audited and announced."""
        if not reason.strip():
            raise PauseError("a pause needs a reason: say why automation must stop", reason="bad_pause")
        if not timedelta(0) < duration <= MAX_PAUSE:
            raise PauseError(f"a pause lasts more than 0 s and at most {MAX_PAUSE.days} days", reason="bad_pause")
        now = self._clock.now()
        pause = Pause(secrets.token_hex(4), scope, reason.strip(), by, now, now + duration)
        async with self._store.transaction("pause automation") as s:
            s.add(
                PauseRow(
                    id=pause.id, scope=scope.kind.value, value=scope.value, reason=pause.reason, created_by=by,
                    created_at=now, until=pause.until,
                )
            )  # fmt: skip
            self._record(s, "automation_paused", by, pause, now)
            await notify(s, self._store, CONTROL_CHANNEL)
        log.warning("automation paused", pause=pause.id, scope=str(scope), by=by, until=pause.until.isoformat())
        if self.changed is not None:
            self.changed()
        return pause

    async def resume(self, pause_id: str | None, by: str) -> list[Pause]:
        """End one active pause (``pause_id``) or every active one (None); the pauses ended."""
        now = self._clock.now()
        async with self._store.transaction("resume automation") as s:
            query = select(PauseRow).where(_active(now))
            if pause_id is not None:
                query = query.where(PauseRow.id == pause_id)
            rows = list((await s.execute(query.with_for_update())).scalars())
            if pause_id is not None and not rows:
                raise PauseError(f"no active pause {pause_id!r} (see `rollbackd pauses`)", reason="unknown_pause")
            ended = []
            for row in rows:
                await s.execute(update(PauseRow).where(PauseRow.id == row.id).values(resumed_at=now, resumed_by=by))
                done = replace(Pause.from_row(row), resumed_at=now, resumed_by=by)
                self._record(s, "automation_resumed", by, done, now)
                ended.append(done)
            if ended:
                await notify(s, self._store, CONTROL_CHANNEL)
        for p in ended:
            log.warning("automation resumed", pause=p.id, scope=str(p.scope), by=by)
        if ended and self.changed is not None:
            self.changed()
        return ended

    async def active(self, s: AsyncSession | None = None) -> list[Pause]:
        """The pauses in force now, oldest first."""
        now = self._clock.now()
        query = select(PauseRow).where(_active(now)).order_by(PauseRow.created_at, PauseRow.id)
        if s is not None:
            return [Pause.from_row(r) for r in (await s.execute(query)).scalars()]
        async with self._store.transaction("read pauses") as session:
            return [Pause.from_row(r) for r in (await session.execute(query)).scalars()]

    async def listing(self, *, since: datetime | None = None) -> list[Pause]:
        """Active pauses and those that ended after ``since`` (default: the last 24 hours), newest first."""
        now = self._clock.now()
        since = since or now - timedelta(days=1)
        query = (
            select(PauseRow)
            .where(or_(_active(now), PauseRow.until >= since, PauseRow.resumed_at >= since))
            .order_by(PauseRow.created_at.desc(), PauseRow.id)
        )
        async with self._store.transaction("list pauses") as s:
            return [Pause.from_row(r) for r in (await s.execute(query)).scalars()]

    def _record(self, s: AsyncSession, action: str, by: str, pause: Pause, now: datetime) -> None:
        detail = pause.to_json(now)
        s.add(AuditRow(incident_id=None, at=now, actor=by, action=action, detail=detail))
        if self._notice:
            s.add(
                OutboxRow(
                    incident_id=None, channel=AUTOMATION_SLACK, kind=action, payload={"text": describe(action, pause)},
                    state="pending", attempts=0, next_attempt_at=now, created_at=now,
                )
            )  # fmt: skip


def describe(action: str, pause: Pause) -> str:
    """The Slack line for a pause or a resume."""
    if action == "automation_resumed":
        return f":arrow_forward: automated rollback resumed for {pause.scope} by {pause.resumed_by} (pause {pause.id})"
    until = pause.until.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f":double_vertical_bar: automated rollback paused for {pause.scope} by {pause.created_by} "
        f"({pause.reason}) until {until} — pause {pause.id}; decisions are still made and notified"
    )


class PauseWatcher:
    """This replica's view of the active pauses, at most ``WATCH_POLL_S`` old; sets the gauge."""

    def __init__(self, pauses: Pauses) -> None:
        self._pauses = pauses
        self._wake = asyncio.Event()
        self.current: tuple[Pause, ...] = ()

    def wake(self) -> None:
        """Another replica changed a pause (NOTIFY): refresh now."""
        self._wake.set()

    async def refresh(self) -> tuple[Pause, ...]:
        self.current = tuple(await self._pauses.active())
        by_kind = dict.fromkeys(ScopeKind, 0)
        for p in self.current:
            by_kind[p.scope.kind] += 1
        for kind, n in by_kind.items():
            AUTOMATION_PAUSES.labels(scope=kind.value).set(n)
        return self.current

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RollbackdError as exc:  # the store down: the last view stands, the next poll retries
                log.warning("cannot read pauses", error=str(exc), reason=exc.reason)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # the poll: a NOTIFY lost with a connection is caught up
                await asyncio.wait_for(self._wake.wait(), WATCH_POLL_S)
