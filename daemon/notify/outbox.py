"""The delivery worker: turns outbox rows into PagerDuty events and Slack messages, durably.

``incidents`` writes rows with ``daemon.store.outbox.enqueue_notification`` in
the same transaction as the change. This worker claims due rows, hands each to
the channel's ``Notifier`` and records the outcome:

* success → ``sent``; ``PermanentError`` (4xx other than 429) → ``failed`` with
  the reason in ``last_error``; ``TemporaryError`` (429, 5xx, timeouts) →
  retried after its ``delay`` (Retry-After) or a jittered, bounded backoff;
  rows still failing after ``give_up_after_s`` fail with reason ``gave_up``.
* Per incident and channel, row N+1 is never delivered before row N is sent or
  has failed permanently: the claim query skips a row while an earlier row of
  the same incident and channel is still pending.
* A claim is a lease: ``attempts`` is bumped (an optimistic lock between
  replicas) and ``next_attempt_at`` moved ``lease_s`` ahead. A worker that dies
  mid-delivery leaves the row pending, and it is retried when the lease runs
  out, by this process after a restart or by another replica. Deliveries are
  idempotent per row where the API allows it (PagerDuty dedup keys; Slack
  updates the message whose ``ts`` it stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import aliased

from daemon.clock import Clock, sleep_unless
from daemon.errors import PermanentError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import NOTIFICATION_RETRIES, NOTIFICATIONS, OUTBOX_PENDING
from daemon.notify.refs import StoreRefs, UsesRefs
from daemon.redact import scrub
from daemon.store.db import Store
from daemon.store.tables import OutboxRow

log = get_logger(__name__)

_MAX_ERROR_CHARS = 500
# While the store is down: how long the worker waits at most between looks, and how many times
# it tries to record an outcome of a delivery that already happened (about 18 s in all).
_STORE_BACKOFF_CAP_S = 5.0
_OUTCOME_ATTEMPTS = 8


class Notifier(Protocol):
    """One delivery channel. ``deliver`` raises TemporaryError(delay=…) or PermanentError(reason=…)."""

    channel: str

    async def deliver(self, payload: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """A row this worker holds the lease on; ``attempts`` is the lock value to finish with."""

    id: int
    incident_id: str | None
    channel: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


class OutboxWorker:
    """Delivers pending outbox rows through ``notifiers`` until ``stop()``."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        notifiers: Sequence[Notifier],
        *,
        batch: int = 32,
        concurrency: int = 8,
        lease_s: float = 120.0,
        poll_s: float = 2.0,
        base_delay_s: float = 2.0,
        max_delay_s: float = 300.0,
        give_up_after_s: float = 86400.0,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._notifiers = {n.channel: n for n in notifiers}
        refs = StoreRefs(store)
        for notifier in notifiers:
            if isinstance(notifier, UsesRefs):
                notifier.bind_refs(refs)
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._lease = timedelta(seconds=lease_s)
        self._poll_s = poll_s
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._give_up = timedelta(seconds=give_up_after_s)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._notifiers)

    def wake(self) -> None:
        """Deliver promptly: called after an enqueue in this process."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; waits for ``wake()`` or the poll interval when idle."""
        self._task = asyncio.current_task()
        log.info("outbox worker started", channels=list(self._notifiers))
        failures = 0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    handled = await self.run_once()
                except TemporaryError as exc:
                    # The store is unreachable: nothing is lost (rows wait in it), so wait and look again.
                    failures += 1
                    delay = min(_STORE_BACKOFF_CAP_S, 0.5 * 2**failures)
                    log.warning("outbox cannot reach the store, retrying", error=str(exc), delay_s=delay)
                    await self._clock.sleep(delay)
                    continue
                failures = 0
                if handled == 0 and not self._stopping.is_set():
                    await self._idle()
        finally:
            log.info("outbox worker stopped")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Finish in-flight deliveries (up to ``grace_s``), then return; idempotent."""
        self._stopping.set()
        self._wake.set()
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
        except TimeoutError:
            # A delivery hung past the grace: cancel it; its lease lets a later worker retry the row.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _idle(self) -> None:
        await sleep_unless(self._clock, self._poll_s, self._wake)

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver it; returns how many rows were handled."""
        if not self._notifiers:
            return 0
        claims = await self._claim(self._clock.now())
        if claims:
            await asyncio.gather(*(self._deliver(c) for c in claims))
        await self._update_gauge()
        return len(claims)

    async def _claim(self, now: datetime) -> list[Claim]:
        earlier = aliased(OutboxRow)
        blocked = (
            select(earlier.id)
            .where(
                earlier.state == "pending",
                earlier.channel == OutboxRow.channel,
                earlier.incident_id == OutboxRow.incident_id,
                earlier.id < OutboxRow.id,
            )
            .exists()
        )
        query = (
            select(OutboxRow)
            .where(
                OutboxRow.state == "pending",
                OutboxRow.next_attempt_at <= now,
                OutboxRow.channel.in_(list(self._notifiers)),
                ~blocked,
            )
            .order_by(OutboxRow.id)
            .limit(self._batch)
        )
        claims: list[Claim] = []
        async with self._store.transaction() as session:
            rows = (await session.execute(query)).scalars().all()
            snapshot = [
                Claim(r.id, r.incident_id, r.channel, r.kind, dict(r.payload), r.attempts, r.created_at)
                for r in rows
            ]
            for c in snapshot:
                res = await session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id == c.id, OutboxRow.state == "pending", OutboxRow.attempts == c.attempts)
                    .values(attempts=c.attempts + 1, next_attempt_at=now + self._lease)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    claims.append(
                        Claim(c.id, c.incident_id, c.channel, c.kind, c.payload, c.attempts + 1, c.created_at)
                    )
        return claims

    async def _deliver(self, claim: Claim) -> None:
        notifier = self._notifiers[claim.channel]
        ctx = {"incident_id": claim.incident_id or "", "channel": claim.channel, "outbox_id": claim.id}
        async with self._slots:
            with structlog.contextvars.bound_contextvars(**ctx):
                try:
                    await notifier.deliver({**claim.payload, "outbox_id": claim.id})
                except PermanentError as exc:
                    await self._fail(claim, exc.reason, str(exc))
                except TemporaryError as exc:
                    await self._retry(claim, exc.reason, str(exc), exc.delay)
                except Exception as exc:  # a notifier bug must not kill the worker; retried, bounded by give-up
                    log.exception("notifier raised an unexpected error", kind=claim.kind)
                    await self._retry(claim, "unexpected", type(exc).__name__, None)
                else:
                    await self._finish(claim, state="sent", error=None)
                    NOTIFICATIONS.labels(channel=claim.channel, outcome="sent").inc()
                    log.info("notification delivered", kind=claim.kind, attempts=claim.attempts)

    async def _fail(self, claim: Claim, reason: str, message: str) -> None:
        await self._finish(claim, state="failed", error=f"{reason}: {message}")
        NOTIFICATIONS.labels(channel=claim.channel, outcome="failed").inc()
        log.error("notification failed permanently", kind=claim.kind, reason=reason, error=scrub(message))

    async def _retry(self, claim: Claim, reason: str, message: str, hint: float | None) -> None:
        now = self._clock.now()
        if now - claim.created_at >= self._give_up:
            await self._fail(claim, "gave_up", f"still failing after {claim.attempts} attempts: {reason}: {message}")
            return
        delay = self.backoff(claim.attempts, hint)
        await self._finish(claim, state="pending", error=f"{reason}: {message}", next_at=now + timedelta(seconds=delay))
        NOTIFICATIONS.labels(channel=claim.channel, outcome="retry").inc()
        NOTIFICATION_RETRIES.labels(channel=claim.channel, reason=reason).inc()
        log.warning("notification will be retried", kind=claim.kind, reason=reason, delay_s=round(delay, 2))

    def backoff(self, attempts: int, hint: float | None) -> float:
        """Seconds until the next try: the server's hint if it gave one, else jittered exponential."""
        if hint is not None and hint > 0:
            # Honour Retry-After, bounded so a bogus header cannot park a row for days.
            return min(hint, self._max_delay_s * 4)
        ceiling = min(self._max_delay_s, self._base_delay_s * 2 ** max(0, attempts - 1))
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    async def _finish(self, claim: Claim, *, state: str, error: str | None, next_at: datetime | None = None) -> None:
        now = self._clock.now()
        values: dict[str, Any] = {"state": state, "last_error": scrub(error)[:_MAX_ERROR_CHARS] if error else None}
        if state == "sent":
            values["sent_at"] = now
        if next_at is not None:
            values["next_attempt_at"] = next_at
        # shield: a stop() that cancels us must not lose the outcome of a delivery that happened.
        await asyncio.shield(self._record_outcome(claim, values))

    async def _record_outcome(self, claim: Claim, values: dict[str, Any]) -> None:
        """Write the outcome, waiting out a short store outage: unrecorded, the row would be delivered again."""
        for attempt in range(_OUTCOME_ATTEMPTS):
            try:
                await self._write_outcome(claim, values)
            except TemporaryError:
                if attempt + 1 == _OUTCOME_ATTEMPTS:
                    raise
                await self._clock.sleep(min(_STORE_BACKOFF_CAP_S, 0.25 * 2**attempt))
            else:
                return

    async def _write_outcome(self, claim: Claim, values: dict[str, Any]) -> None:
        async with self._store.transaction() as session:
            res = await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == claim.id, OutboxRow.attempts == claim.attempts)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            log.warning("outbox lease lost before the outcome was recorded", outbox_id=claim.id)

    async def _update_gauge(self) -> None:
        async with self._store.transaction() as session:
            pending = await session.scalar(select(func.count()).where(OutboxRow.state == "pending"))
        OUTBOX_PENDING.set(pending or 0)
