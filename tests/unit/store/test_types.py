"""UtcDateTime: every stored time reads back as an aware UTC instant; a naive time is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from daemon.store.db import Store
from daemon.store.errors import StoreBugError
from daemon.store.tables import InboxRow

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
BERLIN = timezone(timedelta(hours=1))


def row(key: str, received_at: datetime) -> InboxRow:
    return InboxRow(dedupe_key=key, kind="alert", source="test", partition_key="k", payload={}, received_at=received_at)


async def test_times_read_back_aware_utc_and_compare_as_instants(store: Store) -> None:
    async with store.transaction() as session:
        session.add(row("berlin", (T0 + timedelta(minutes=30)).astimezone(BERLIN)))  # 04:30 local
        session.add(row("utc", T0 + timedelta(minutes=45)))
    async with store.transaction() as session:
        found = list((await session.execute(select(InboxRow).order_by(InboxRow.received_at))).scalars())
        later = (
            (
                await session.execute(
                    select(InboxRow.dedupe_key).where(InboxRow.received_at > T0 + timedelta(minutes=40))
                )
            )
            .scalars()
            .all()
        )
    assert [(r.dedupe_key, r.received_at) for r in found] == [
        ("berlin", T0 + timedelta(minutes=30)),
        ("utc", T0 + timedelta(minutes=45)),
    ]
    assert all(r.received_at.tzinfo is UTC for r in found)
    assert later == ["utc"]  # the +01:00 row was stored as 03:30 UTC, not as 04:30


async def test_a_naive_time_is_refused_before_it_is_written(store: Store) -> None:
    with pytest.raises(StoreBugError, match="naive datetime"):
        async with store.transaction() as session:
            session.add(row("naive", datetime(2026, 3, 2, 3, 0)))
    async with store.transaction() as session:
        assert (await session.execute(select(InboxRow))).first() is None
