"""The Kafka source's storage step: a batch of deploy events lands in the deploy history, once each, nowhere else.

``DeployConsumer`` calls ``DeployHistoryStore.record_batch(events)`` once per fetched batch
and commits the batch's Kafka offsets only after it returned.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from daemon.deploys import DeployEvent, DeployKind
from daemon.errors import TemporaryError
from daemon.ingest import DeployHistoryStore
from daemon.model import Target
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


async def test_a_batch_with_redeliveries_stores_each_event_once_and_nothing_in_the_inbox(store: Store) -> None:
    history = DeployHistoryStore(store)
    assert await history.record_batch([deploy("a"), deploy("b"), deploy("a")]) == 2  # "a" twice in one batch
    assert await history.record_batch([deploy("b"), deploy("c")]) == 1  # Kafka redelivered "b"
    assert await counts(store) == (0, 3)
    snap = await history.snapshot([Target("shop", "checkout-web")], None, T0)
    assert sorted(e.event_id for e in snap.events) == ["a", "b", "c"]
    assert snap.events[0].migration is True
    assert snap.events[0].revision == 4


async def test_a_batch_larger_than_one_insert_is_stored_whole(store: Store) -> None:
    history = DeployHistoryStore(store)
    events = [deploy(f"e{i}") for i in range(1200)]  # three multi-row INSERTs in one transaction
    assert await history.record_batch(events) == 1200
    assert await history.record_batch(events[::-1]) == 0
    assert await counts(store) == (0, 1200)


async def test_an_unreachable_database_is_a_temporary_error_for_the_consumer_to_retry() -> None:
    # Nothing listens on port 1: the connection is refused, as during a database restart.
    down = Store("postgresql+asyncpg://rollbackd@127.0.0.1:1/rollbackd")
    try:
        with pytest.raises(TemporaryError) as caught:
            await DeployHistoryStore(down).record_batch([deploy("a")])
    finally:
        await down.close()
    assert caught.value.reason == "store"
