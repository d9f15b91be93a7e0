"""Feeds pending inbox rows to the handler: one key in order, different keys in parallel.

Third stage of the pipeline, between the durable inbox and the rules. Rows are
read in id order and queued per partition key (``namespace/deployment``), so
the events of one Deployment are handled one after another while different
Deployments proceed side by side, at most ``concurrency`` at a time. A row is
marked processed only after the handler returned; a ``TemporaryError`` is
retried with backoff (the key waits, others go on), a ``PermanentError`` is
recorded on the row and counted. Rows left pending by a crash are picked up at
start, so an alert acknowledged with 200 is handled even if the daemon died
right after answering.

Run it on one replica (the leader): the inbox does not lock rows between
dispatchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol

from daemon.clock import Clock
from daemon.errors import PermanentError, TemporaryError
from daemon.ingest.inbox import Inbox, InboxItem
from daemon.logs import get_logger
from daemon.metrics import INBOX_ERRORS, QUEUE_DEPTH

log = get_logger(__name__)


class Handler(Protocol):
    """What the dispatcher drives: the rules and incidents stage, for one inbox item."""

    async def handle(self, item: InboxItem) -> None: ...


class Dispatcher:
    """Reads the inbox and drives ``handler`` with per-key FIFO and bounded parallelism."""

    def __init__(
        self,
        inbox: Inbox,
        handler: Handler,
        clock: Clock,
        *,
        concurrency: int = 8,
        poll_interval_s: float = 5.0,
        max_buffered: int = 1000,
        max_backoff_s: float = 60.0,
    ) -> None:
        self._inbox = inbox
        self._handler = handler
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._poll_interval_s = poll_interval_s
        self._max_buffered = max_buffered
        self._max_backoff_s = max_backoff_s
        self._queues: dict[str, deque[InboxItem]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._last_id = 0
        self._buffered = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self.handled = 0  # items closed (successfully or with an error) by this dispatcher
        inbox.add_listener(self.wake)

    def wake(self) -> None:
        """New rows were committed: look now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until ``stop()``; picks up whatever a previous run left pending."""
        if self._running:
            raise RuntimeError("dispatcher is already running")
        self._running = True
        self._stopping = False  # a dispatcher may run again, e.g. when leadership comes back
        self._stopped.clear()
        try:
            while not self._stopping:
                self._wake.clear()
                found = await self._fill()
                if self._stopping:
                    break
                if not found and not self._workers:
                    self._idle.set()
                if not found or self._buffered >= self._max_buffered:
                    await self._wait()
        finally:
            await self._cancel_workers()
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
            self._wake.set()
            await self._idle.wait()
            if not self._workers and self._buffered == 0:
                return

    async def _wait(self) -> None:
        """Sleep until woken, or until the poll interval passes (rows from another replica's API)."""
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(self._poll_interval_s))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    async def _fill(self) -> bool:
        """Queue the next page of pending rows; True if any were found."""
        room = self._max_buffered - self._buffered
        if room <= 0:
            return True
        try:
            items = await self._inbox.pending(min(room, 256), after_id=self._last_id)
        except TemporaryError as exc:
            log.warning("inbox read failed, retrying", error=str(exc))
            return False
        for item in items:
            self._last_id = max(self._last_id, item.id)
            self._queues.setdefault(item.partition_key, deque()).append(item)
            self._buffered += 1
            if item.partition_key not in self._workers:
                task = asyncio.create_task(self._drain(item.partition_key), name=f"dispatch:{item.partition_key}")
                self._workers[item.partition_key] = task
        QUEUE_DEPTH.set(self._buffered)
        return bool(items)

    async def _drain(self, key: str) -> None:
        """Handle one key's queue in order until it is empty."""
        queue = self._queues[key]
        try:
            while queue:
                item = queue[0]
                await self._handle_with_retry(item)
                queue.popleft()
                self._buffered -= 1
                self.handled += 1
                QUEUE_DEPTH.set(self._buffered)
        finally:
            if not queue:
                self._queues.pop(key, None)
            self._workers.pop(key, None)
            if not self._workers:
                self._wake.set()  # let run() notice idleness or refill

    async def _handle_with_retry(self, item: InboxItem) -> None:
        """Handle ``item`` until it succeeds or fails for good; the row is closed either way."""
        attempt = 0
        while True:
            async with self._slots:
                try:
                    await self._handler.handle(item)
                except TemporaryError as exc:
                    retry = exc
                except PermanentError as exc:
                    await self._fail(item, exc.reason, str(exc))
                    return
                except Exception as exc:
                    log.exception("inbox handler crashed", inbox_id=item.id, kind=item.kind)
                    await self._fail(item, "unexpected", f"{type(exc).__name__}: {exc}")
                    return
                else:
                    await self._close(item, None)
                    return
            attempt += 1
            backoff = min(self._max_backoff_s, 2.0 ** (attempt - 1))
            delay = min(self._max_backoff_s, retry.delay) if retry.delay is not None else backoff
            INBOX_ERRORS.labels(kind=item.kind, reason=retry.reason, outcome="retried").inc()
            log.warning(
                "inbox item failed, will retry", inbox_id=item.id, attempt=attempt, delay_s=delay, error=str(retry)
            )
            await self._clock.sleep(delay)  # outside the slot: other keys use it meanwhile

    async def _fail(self, item: InboxItem, reason: str, message: str) -> None:
        INBOX_ERRORS.labels(kind=item.kind, reason=reason, outcome="failed").inc()
        log.error("inbox item failed permanently", inbox_id=item.id, kind=item.kind, reason=reason, error=message)
        await self._close(item, f"{reason}: {message}")

    async def _close(self, item: InboxItem, error: str | None) -> None:
        """Mark the row processed, retrying while the store is unreachable."""
        attempt = 0
        while True:
            try:
                await self._inbox.mark_processed(item.id, error=error)
            except TemporaryError as exc:
                attempt += 1
                log.warning("cannot mark inbox item processed, retrying", inbox_id=item.id, error=str(exc))
                await self._clock.sleep(min(self._max_backoff_s, 2.0**attempt))
            else:
                return

    async def _cancel_workers(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
        self._buffered = 0
        QUEUE_DEPTH.set(0)
