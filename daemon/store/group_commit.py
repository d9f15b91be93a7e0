"""Group commit: requests that arrive while a write is in flight are written together in the next one.

A store helper for writers with many concurrent callers, such as the inbox's
write side (``ingest.inbox``), where each webhook request hands its rows to
``GroupCommit.submit`` and waits; one writer task takes everything waiting,
writes it in one transaction and answers each request with its own share of
the result, then takes what arrived meanwhile. A request is answered only
after the transaction holding its rows committed; when the write fails, every
request of that group gets the error (the webhook's 503), and none of them was
answered before. Under a storm the per-transaction costs (the commit's fsync,
the store round trips) are paid once per group instead of once per request; a
lone request is written at once, with no waiting for company.

The writer task exists only while there is work, so an idle process holds none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Requests per transaction: bounds one transaction's size (and its lock time) under a storm.
MAX_GROUP = 64


class GroupCommit(Generic[Item, Result]):
    """``await submit(item)`` → ``write([items…])[i]``, with ``write`` called for one group at a time.

    ``write`` receives the items in arrival order and returns one result per item, in that
    order, once they are durable; whatever it raises is raised to every submitter of that group.
    """

    def __init__(
        self, write: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], *, max_group: int = MAX_GROUP
    ) -> None:
        self._write = write
        self._max_group = max_group
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` for the next group and wait until its group is written (or failed)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            # Its own task, not the submitter's: a request cancelled mid-write (a client that hung
            # up) must not cancel the transaction its group shares with other requests.
            self._writer = asyncio.create_task(self._run(), name="group-commit")
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                await self._commit(group)
        finally:
            self._writer = None
            for _, future in self._waiting:  # only when this task itself was cancelled (shutdown)
                future.cancel()
            self._waiting.clear()

    async def _commit(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        # A submitter that was cancelled before its group started got no answer: not written.
        live = [(item, future) for item, future in group if not future.done()]
        if not live:
            return
        try:
            results = await self._write([item for item, _ in live])
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure, whatever it is
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)
