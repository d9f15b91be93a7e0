"""Feeds inbox rows to the handler: one key in order, different keys in parallel, each row once.

Third stage of the pipeline, between the durable inbox and the rules. Rows are
claimed (``ingest.claims``: a lease per row, ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL) in id order and queued per partition key (``namespace/deployment``),
so the events of one Deployment are handled one after another while different
Deployments proceed side by side, at most ``concurrency`` at a time. Claiming
instead of reading "after the last id" means a row whose transaction committed
late (PostgreSQL commits in any order) is still found, and a row is handled by
one dispatcher even when two replicas both dispatch for a moment (a failover).
Claims are renewed while rows are buffered and released at ``stop()``.

A row is marked processed only after the handler returned; closes are written by
one flusher task, every close that piled up during the previous write in one
UPDATE. A handled row whose close is not written yet still counts as buffered,
so reading stops when closes cannot be written. A ``TemporaryError`` (the store
unreachable, a conflict) is retried with capped backoff (the key waits, others
go on); a ``PermanentError`` is recorded on the row and counted. Rows left
pending by a crash are picked up when the lease runs out (or at once by the
same instance's next run), so an alert acknowledged with 200 is handled even if
the daemon died right after answering; a crash between a handler's return and
the flush means the item is handled again (at least once).

Woken by ``wake()`` — this replica's inserts, and other replicas' through
PostgreSQL ``LISTEN/NOTIFY`` (``store.listen``) — and otherwise by a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol

from daemon.clock import Clock, sleep_unless
from daemon.errors import PermanentError, TemporaryError
from daemon.ingest.claims import InboxClaims
from daemon.ingest.inbox import InboxItem
from daemon.logs import get_logger
from daemon.metrics import INBOX_ERRORS, QUEUE_DEPTH

log = get_logger(__name__)

_PAGE = 256  # rows per claim


class Handler(Protocol):
    """What the dispatcher drives: the rules and incidents stage, for one inbox item."""

    async def handle(self, item: InboxItem) -> None: ...


class Dispatcher:
    """Reads the inbox and drives ``handler`` with per-key FIFO and bounded parallelism."""

    def __init__(
        self,
        claims: InboxClaims,
        handler: Handler,
        clock: Clock,
        *,
        concurrency: int = 32,
        poll_interval_s: float = 5.0,
        max_buffered: int = 1000,
        max_backoff_s: float = 10.0,
    ) -> None:
        self._claims = claims
        self._inbox = claims.inbox
        self._handler = handler
        self._clock = clock
        # Handlers mostly wait on the store, and the incidents' writers group concurrent handlers'
        # changes into shared transactions (store.group_commit): 32 in flight made those groups
        # large enough to double joins/s on both stores (bench.ingest --variant join) where 8 did not.
        self._slots = asyncio.Semaphore(concurrency)
        self._poll_interval_s = poll_interval_s
        self._max_buffered = max_buffered
        self._max_backoff_s = max_backoff_s
        self._queues: dict[str, deque[InboxItem]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._held: set[int] = set()  # ids of the buffered rows: a claim of ours that lapsed is not news
        self._buffered = 0  # read from the inbox and not yet closed in it (queued, in flight or unflushed)
        self._closing: list[tuple[InboxItem, str | None]] = []  # handled, close not yet written
        self._flush_wanted = asyncio.Event()
        self._wake = asyncio.Event()
        # Whether the next pass claims. A claim is a write, and on SQLite the one writer's lock is
        # shared with the incidents' transactions: claiming again right after a short page (or each
        # time a key's queue ran dry) put an empty claim in front of every decision (issue 19). So
        # a pass claims when rows were committed (``wake``), after a full page, when room came back,
        # and at each poll; other wake-ups only check for idleness.
        self._look = True
        self._starved = False  # a claim was cut short (or skipped) because the buffer was full
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self.handled = 0  # items closed (successfully or with an error) by this dispatcher
        self._inbox.add_listener(self.wake)

    def wake(self) -> None:
        """New rows were committed: look now instead of at the next poll."""
        self._look = True
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until ``stop()``; picks up whatever a previous run left pending."""
        if self._running:
            raise RuntimeError("dispatcher is already running")
        self._running = True
        self._stopping = False  # a dispatcher may run again, e.g. when leadership comes back
        self._stopped.clear()
        await self._release("a previous run's")
        flusher = asyncio.create_task(self._flush_loop(), name="dispatch:flush")
        renewer = asyncio.create_task(self._renew_loop(), name="dispatch:renew")
        self._look = True  # whatever a previous run (or another replica) left pending
        try:
            while not self._stopping:
                self._wake.clear()
                more = False
                if self._look:
                    self._look = False
                    more = await self._fill()
                if self._stopping:
                    break
                if not more and not self._workers and self._buffered == 0:
                    self._idle.set()
                if not more or self._buffered >= self._max_buffered:
                    await self._wait()
        finally:
            await self._cancel_workers()
            for task in (flusher, renewer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._final_flush()
            await self._release("unfinished")
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        """Stop reading and cancel in-flight handling; unfinished rows stay pending for the next run."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()

    async def wait_idle(self) -> None:
        """Until nothing is pending, queued or in flight (tests and graceful drains)."""
        while True:
            self._idle.clear()
            self.wake()
            await self._idle.wait()
            if not self._workers and self._buffered == 0:
                return

    async def _wait(self) -> None:
        """Sleep until woken, or until the poll interval passes (the last resort if a wake-up was lost)."""
        await sleep_unless(self._clock, self._poll_interval_s, self._wake)
        if not self._wake.is_set():
            self._look = True

    async def _fill(self) -> bool:
        """Queue the next page of pending rows; True if it was full (more may be waiting) or no room is left."""
        room = self._max_buffered - self._buffered
        if room <= 0:
            self._starved = True
            return True
        try:
            items, full = await self._claims.claim_page(limit := min(room, _PAGE))
        except TemporaryError as exc:
            log.warning("inbox read failed, retrying", error=str(exc), reason=exc.reason)
            return False
        for item in items:
            if item.id in self._held:
                continue  # our lease lapsed (the store was away) and we took it back: it is queued already
            self._held.add(item.id)
            self._queues.setdefault(item.partition_key, deque()).append(item)
            self._buffered += 1
            if item.partition_key not in self._workers:
                task = asyncio.create_task(self._drain(item.partition_key), name=f"dispatch:{item.partition_key}")
                self._workers[item.partition_key] = task
        QUEUE_DEPTH.set(self._buffered)
        if full:
            self._look = True  # more rows may be waiting: the next pass claims again at once
            self._starved = self._starved or limit < _PAGE  # cut short by the buffer, not by the inbox
        return full

    async def _drain(self, key: str) -> None:
        """Handle one key's queue in order until it is empty."""
        queue = self._queues[key]
        try:
            while queue:
                item = queue[0]
                error = await self._handle_with_retry(item)
                queue.popleft()
                # The next item of this key may start now: its handling does not depend on the row
                # being closed, and a crash before the flush only means handling it again.
                self._closing.append((item, error))
                self._flush_wanted.set()
        finally:
            if not queue:
                self._queues.pop(key, None)
            self._workers.pop(key, None)
            if not self._workers:
                self._wake.set()  # let run() notice idleness or refill

    async def _handle_with_retry(self, item: InboxItem) -> str | None:
        """Handle ``item`` until it succeeds (None) or fails for good (the error to record on the row)."""
        attempt = 0
        while True:
            async with self._slots:
                try:
                    await self._handler.handle(item)
                except TemporaryError as exc:
                    retry = exc
                except PermanentError as exc:
                    return self._failed(item, exc.reason, str(exc))
                except Exception as exc:
                    log.exception("inbox handler crashed", inbox_id=item.id, kind=item.kind)
                    return self._failed(item, "unexpected", f"{type(exc).__name__}: {exc}")
                else:
                    return None
            attempt += 1
            backoff = min(self._max_backoff_s, 2.0 ** (attempt - 1))
            delay = min(self._max_backoff_s, retry.delay) if retry.delay is not None else backoff
            INBOX_ERRORS.labels(kind=item.kind, reason=retry.reason, outcome="retried").inc()
            log.warning(
                "inbox item failed, will retry", inbox_id=item.id, attempt=attempt, delay_s=delay, error=str(retry)
            )
            await self._clock.sleep(delay)  # outside the slot: other keys use it meanwhile

    @staticmethod
    def _failed(item: InboxItem, reason: str, message: str) -> str:
        INBOX_ERRORS.labels(kind=item.kind, reason=reason, outcome="failed").inc()
        log.error("inbox item failed permanently", inbox_id=item.id, kind=item.kind, reason=reason, error=message)
        return f"{reason}: {message}"

    async def _flush_loop(self) -> None:
        """Write the closes that piled up, all in one transaction, retrying while the store is unreachable."""
        attempt = 0
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            while self._closing:
                try:
                    await self._flush()
                except Exception as exc:  # the flusher must outlive any one failure
                    attempt += 1
                    if isinstance(exc, TemporaryError):
                        log.warning(
                            "cannot mark inbox items processed, retrying", count=len(self._closing), error=str(exc)
                        )
                    else:
                        log.exception("marking inbox items processed crashed, retrying", count=len(self._closing))
                    await self._clock.sleep(min(self._max_backoff_s, 2.0**attempt))
                else:
                    attempt = 0

    async def _flush(self) -> None:
        """Close the rows of ``_closing`` written so far; they leave the list only once committed."""
        batch = list(self._closing)
        await self._inbox.mark_processed_many([(item.id, error) for item, error in batch])
        del self._closing[: len(batch)]  # appends during the write stay for the next round
        self._held.difference_update(item.id for item, _ in batch)
        self._buffered -= len(batch)
        self.handled += len(batch)
        QUEUE_DEPTH.set(self._buffered)
        room_again = self._starved
        if room_again:
            self._starved = False
            self._look = True  # a claim was cut short for room, and room came back
        if self._buffered == 0 or room_again:
            self._wake.set()  # idleness to notice, or room to read again

    async def _renew_loop(self) -> None:
        """Keep the claims on buffered rows alive: a third of the lease between renewals."""
        every = self._claims.lease.total_seconds() / 3
        while True:
            await self._clock.sleep(every)
            if self._buffered == 0:
                continue
            try:
                await self._claims.renew()
            except TemporaryError as exc:
                # The lease may run out and another dispatcher take the rows; the handler's
                # effects are idempotent per alert, so that costs time, not correctness.
                log.warning("cannot renew inbox claims, retrying", error=str(exc), reason=exc.reason)

    async def _release(self, which: str) -> None:
        """Give back this holder's open claims so the next dispatcher need not wait for the lease."""
        try:
            released = await self._claims.release()
        except TemporaryError as exc:
            log.warning("cannot release inbox claims; they expire by themselves", error=str(exc))
            return
        if released:
            log.info("inbox claims released", rows=released, which=which)

    async def _final_flush(self) -> None:
        """One attempt at the closes still unwritten at stop; failing, those rows are handled again next run."""
        if not self._closing:
            return
        try:
            await self._flush()
        except TemporaryError as exc:
            log.warning(
                "inbox items handled but not closed; they will be handled again",
                count=len(self._closing),
                error=str(exc),
            )
        self._closing.clear()
        self._held.clear()
        self._buffered = 0
        QUEUE_DEPTH.set(0)

    async def _cancel_workers(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
        self._held = {item.id for item, _ in self._closing}
        self._buffered = len(self._closing)  # only handled-but-unflushed items are left
        QUEUE_DEPTH.set(self._buffered)
