"""Deadlines that survive restarts: approval deadlines, act-within windows, escalation, the objective.

Timers are rows (``TimerRow``), written with the transition that set them, so
a restarted daemon finds them where it left them. ``TimerRunner`` wakes at the
next due time (through the injected clock, so tests run in fake time), and on
the leader only, claims each due timer and hands it to the service, which
turns it into a machine event in the same transaction as the claim.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from daemon.clock import Clock
from daemon.errors import RollbackdError, TemporaryError
from daemon.incidents import repo
from daemon.incidents.events import TimerKind
from daemon.logs import get_logger
from daemon.store.db import Store

log = get_logger(__name__)

Fire = Callable[[str, int, TimerKind], Awaitable[None]]
_MAX_BACKOFF_S = 5.0  # a deadline is never held back by more than this once the store is back


class TimerRunner:
    """Fires due timers; ``run`` loops until cancelled, ``fire_due`` does one pass."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        fire: Fire,
        is_leader: Callable[[], bool],
        redrive: Callable[[], Awaitable[object]],
        poll_s: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._fire = fire
        self._is_leader = is_leader
        self._redrive = redrive
        # Polling as well as sleeping until the next due time: another replica may set an earlier timer.
        self.poll_s = poll_s

    async def next_due(self) -> datetime | None:
        async with self._store.transaction() as s:
            return await repo.next_due(s)

    async def fire_due(self) -> int:
        """Fire every timer due now (leader only); the number fired."""
        if not self._is_leader():
            return 0
        async with self._store.transaction() as s:
            due = [(t.incident_id, t.id, TimerKind(t.kind)) for t in await repo.due_timers(s, self._clock.now())]
        for incident_id, timer_id, kind in due:
            try:
                await self._fire(incident_id, timer_id, kind)
            except RollbackdError as exc:
                # One bad timer must not stop the others; it stays unfired and is retried next pass.
                log.warning("timer failed", incident_id=incident_id, kind=kind.value, error=str(exc), reason=exc.reason)
        return len(due)

    async def run(self) -> None:
        """Loop until cancelled; a store that cannot answer is waited out with capped backoff."""
        failures = 0
        while True:
            try:
                wait = await self._pass()
            except TemporaryError as exc:
                failures += 1
                wait = min(_MAX_BACKOFF_S, 0.5 * 2**failures)
                log.warning("timers cannot reach the store, retrying", error=str(exc), reason=exc.reason, delay_s=wait)
            else:
                failures = 0
            await self._clock.sleep(wait)

    async def _pass(self) -> float:
        """Fire what is due and re-drive what waits for the leader; seconds until the next look."""
        if self._is_leader():
            await self.fire_due()
            # An incident approved through another replica's API waits for the leader to drive it.
            await self._redrive()
        wait = self.poll_s
        nxt = await self.next_due()
        if nxt is not None:
            wait = min(wait, max(0.0, (nxt - self._clock.now()).total_seconds()))
        return wait
