"""PagerDuty webhook receipts: a redelivery that races the first delivery is not an error."""

from __future__ import annotations

from datetime import UTC, datetime

from daemon.api.pagerduty import _record, _seen
from daemon.store.db import Store

NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


async def test_a_receipt_recorded_twice_is_recorded_once(store: Store) -> None:
    await _record(store, "evt-1", NOW)
    await _record(store, "evt-1", NOW)  # the store reports the duplicate as its ConstraintError
    assert await _seen(store, "evt-1")
