"""The Kafka source's storage step: a batch of deploy events lands in the inbox and the history in ONE transaction.

``DeployConsumer`` calls ``Inbox.accept_deploys(events, alongside=DeployHistoryStore.record_many)``
once per fetched batch and commits the batch's Kafka offsets only for the ``stored`` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.clock import FakeClock
from daemon.errors import QueueFullError
from daemon.ingest import DeployHistoryStore, Inbox
from daemon.model import DeployEvent, DeployKind
from daemon.store.db import Store
from daemon.store.tables import DeployRow, InboxRow

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def deploy(event_id: str) -> DeployEvent:
    return DeployEvent(
        event_id=event_id,
        kind=DeployKind.SUCCEEDED,
        service="checkout",
        namespace="shop",
        deployment="checkout-web",
        at=T0,
        revision=4,
        image="registry/checkout:2.0",
        migration=True,
    )


async def counts(store: Store) -> tuple[int, int]:
    async with store.transaction() as s:
        inbox = (await s.execute(select(func.count()).select_from(InboxRow))).scalar_one()
        history = (await s.execute(select(func.count()).select_from(DeployRow))).scalar_one()
    return int(inbox), int(history)


async def test_a_batch_with_redeliveries_stores_each_event_once_in_both_tables(store: Store, clock: FakeClock) -> None:
    inbox, history = Inbox(store, clock), DeployHistoryStore(store)
    first = await inbox.accept_deploys([deploy("a"), deploy("b"), deploy("a")], alongside=history.record_many)
    assert (first.stored, first.accepted) == (3, 2)  # "a" twice in one batch: one row
    again = await inbox.accept_deploys([deploy("b"), deploy("c")], alongside=history.record_many)
    assert (again.stored, again.accepted) == (2, 1)
    assert await counts(store) == (3, 3)
    assert [i.deploy.event_id for i in await inbox.pending(10) if i.deploy] == ["a", "b", "c"]
    snap = await history.snapshot("shop", "checkout-web", None, T0)
    assert sorted(e.event_id for e in snap.events) == ["a", "b", "c"]
    assert snap.events[0].migration is True
    assert snap.events[0].revision == 4


async def test_only_as_many_as_there_is_room_for_are_taken_in_order(store: Store, clock: FakeClock) -> None:
    inbox, history = Inbox(store, clock, max_pending=3), DeployHistoryStore(store)
    assert (await inbox.accept_deploys([deploy("a")], alongside=history.record_many)).stored == 1
    result = await inbox.accept_deploys([deploy(x) for x in "bcde"], alongside=history.record_many)
    assert (result.stored, result.accepted) == (2, 2)  # b and c; d and e are left for later
    assert await counts(store) == (3, 3)
    with pytest.raises(QueueFullError):
        await inbox.accept_deploys([deploy("d")], alongside=history.record_many)
    assert not await inbox.has_room()


async def test_a_failing_history_write_leaves_no_inbox_row(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)

    async def broken(connection: AsyncConnection, events: Sequence[DeployEvent]) -> None:
        raise RuntimeError("history table unavailable")

    with pytest.raises(RuntimeError):
        await inbox.accept_deploys([deploy("a"), deploy("b")], alongside=broken)
    assert await counts(store) == (0, 0)  # the offset stays uncommitted and the redelivery finds nothing half-done
