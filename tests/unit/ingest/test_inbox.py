"""The durable inbox: one row per alert episode, whatever the redeliveries; bounded; ordered per key."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from daemon.clock import FakeClock
from daemon.errors import QueueFullError
from daemon.ingest.inbox import Inbox, partition_key
from daemon.metrics import INBOX_PENDING
from daemon.model import Alert, AlertStatus, Target
from daemon.sources.prometheus_push import PostableAlert, to_alert
from daemon.store.db import Store
from daemon.store.tables import InboxRow
from tests.inbox_util import unprocessed

from .helpers import T0, alert


async def rows(store: Store) -> int:
    async with store.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(InboxRow))).scalar_one())


async def test_redelivered_alerts_are_written_once(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    first = await inbox.accept_alerts([alert(), alert(deployment="api")])
    again = await inbox.accept_alerts([alert(), alert(deployment="api"), alert(deployment="db")])
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (1, 2)
    assert await rows(store) == 3


async def test_duplicates_inside_one_batch_count_once(store: Store, clock: FakeClock) -> None:
    result = await Inbox(store, clock).accept_alerts([alert(), alert()])
    assert (result.accepted, result.duplicates) == (1, 1)


async def test_resolution_and_a_new_episode_are_news(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    await inbox.accept_alerts([alert()])
    result = await inbox.accept_alerts([alert(status=AlertStatus.RESOLVED), alert(starts_min=30)])
    assert result.accepted == 2


async def test_concurrent_deliveries_of_the_same_alerts_make_one_row_each(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    batch = [alert(deployment=f"d{i}") for i in range(5)]
    results = await asyncio.gather(*(inbox.accept_alerts(batch) for _ in range(8)))
    assert sum(r.accepted for r in results) == 5
    assert sum(r.duplicates for r in results) == 35
    assert await rows(store) == 5


async def test_full_inbox_refuses_and_writes_nothing(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock, max_pending=2)
    await inbox.accept_alerts([alert(deployment="a"), alert(deployment="b")])
    with pytest.raises(QueueFullError):
        await inbox.accept_alerts([alert(deployment="c")])
    assert not await inbox.has_room()
    assert INBOX_PENDING._value.get() == 2
    (first, _) = await unprocessed(inbox, 10)
    await inbox.mark_processed(first.id)
    assert await inbox.has_room()
    assert (await inbox.accept_alerts([alert(deployment="c")])).accepted == 1


async def test_pending_in_id_order_and_processed_rows_leave(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    await inbox.accept_alerts([alert(deployment="a"), alert(deployment="b")])
    assert (await inbox.accept_alerts([alert(deployment="c")])).accepted == 1
    assert (await inbox.accept_alerts([alert(deployment="c")])).duplicates == 1  # Alertmanager HA redelivery
    items = await unprocessed(inbox, 10)
    assert [i.alert.labels["deployment"] for i in items] == ["a", "b", "c"]
    assert [i.id for i in items] == sorted(i.id for i in items)
    assert items[0].received_at == clock.now()
    await inbox.mark_processed(items[0].id)
    await inbox.mark_processed(items[1].id, error="invalid_input: boom")
    assert [i.id for i in await unprocessed(inbox, 10)] == [items[2].id]


async def test_listener_is_called_only_when_rows_were_added(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    calls: list[int] = []
    inbox.add_listener(lambda: calls.append(1))
    await inbox.accept_alerts([alert()])
    await inbox.accept_alerts([alert()])
    assert calls == [1]


def test_partition_key_is_the_alerts_target_else_its_name() -> None:
    def pushed(**labels: str) -> Alert:  # built by a real edge parser, as the inbox receives them
        return to_alert(PostableAlert(labels={"alertname": "HighErrorRate", **labels}), 0, T0)

    assert partition_key(pushed(namespace="shop", deployment="web")) == "shop/web"
    assert partition_key(pushed(deployment="web")) == "default/web"  # the target's namespace default
    assert partition_key(pushed(service="web")) == "HighErrorRate"  # no workload named


async def test_the_row_carries_the_target_the_edge_decided(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    await inbox.accept_alerts([alert(deployment="web")])
    [item] = await unprocessed(inbox, 10)
    assert item.alert.target == Target("shop", "web")
    async with store.transaction() as session:
        [payload] = (await session.execute(select(InboxRow.payload))).scalars()
    assert payload["target"] == {"namespace": "shop", "name": "web"}


async def test_many_rows_close_in_one_call_each_with_its_outcome(store: Store, clock: FakeClock) -> None:
    inbox = Inbox(store, clock)
    await inbox.accept_alerts([alert(deployment=f"d{i}") for i in range(4)])
    a, b, c, d = await unprocessed(inbox, 10)
    assert await inbox.mark_processed_many([(a.id, None), (b.id, "rule_error: x"), (c.id, None)]) == 3
    assert await inbox.mark_processed_many([(a.id, None)]) == 0  # already closed: not counted twice
    assert [i.id for i in await unprocessed(inbox, 10)] == [d.id]
    async with store.transaction() as s:
        errors = [r.error for r in (await s.execute(select(InboxRow).order_by(InboxRow.id))).scalars()]
    assert errors == [None, "rule_error: x", None, None]
    assert INBOX_PENDING._value.get() == 1


async def test_the_bound_sees_other_replicas_writes_after_a_resync(store: Store, clock: FakeClock) -> None:
    mine, other = Inbox(store, clock, max_pending=3, resync_s=5), Inbox(store, clock)
    await mine.accept_alerts([alert(deployment="a")])
    await other.accept_alerts([alert(deployment=f"o{i}") for i in range(3)])  # another replica's API
    await clock.advance(5)
    with pytest.raises(QueueFullError):
        await mine.accept_alerts([alert(deployment="b")])
    assert await rows(store) == 4


async def test_no_refusal_on_a_stale_count_when_another_replica_drained(store: Store, clock: FakeClock) -> None:
    mine, leader = Inbox(store, clock, max_pending=2), Inbox(store, clock)
    await mine.accept_alerts([alert(deployment="a"), alert(deployment="b")])  # full, as far as it knows
    await leader.mark_processed_many([(i.id, None) for i in await unprocessed(leader, 10)])  # the leader drained it
    assert (await mine.accept_alerts([alert(deployment="c")])).accepted == 1  # recounted, not refused


async def test_the_bound_counts_rows_left_by_a_previous_process(store: Store, clock: FakeClock) -> None:
    await Inbox(store, clock).accept_alerts([alert(deployment="a"), alert(deployment="b")])
    restarted = Inbox(store, clock, max_pending=2)
    with pytest.raises(QueueFullError):
        await restarted.accept_alerts([alert(deployment="c")])
