"""Openings and joins in a storm: decisions for many groups at once share transactions, one incident per group.

The pipeline's call (``IncidentService.decide``) for 120 new groups at once, as
the dispatcher makes it under a storm on many workloads, on both stores:
every group gets one incident with its alert, its audit entry and its outbox
notifications carrying its own record, and the openings are written in far
fewer INSERTs than incidents. Then two writers (two stores, two services: two
replicas) decide the same new groups at the same moment; the database's
one-open-per-group index makes the loser of each race join the winner's
incident, so every group still has exactly one incident holding both alerts.
Last, alerts joining open incidents, each sent to both writers at once: every
alert joins once, and one writer's joins take far fewer transactions than
joins.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from daemon.clock import FakeClock
from daemon.incidents.events import Decided
from daemon.incidents.service import IncidentService
from daemon.model import Target
from daemon.store.db import Store
from daemon.store.tables import AuditRow, IncidentAlertRow, IncidentRow, OutboxRow
from tests.unit.incidents.conftest import MANUAL_QUORUM, FakeExecutor, Secrets, make_secrets
from tests.unit.incidents.test_service import CTO_AND_DATA, alert, decision

pytestmark = pytest.mark.integration

GROUPS = 120


@pytest.fixture
def approver_secrets(tmp_path: Path) -> Secrets:
    return make_secrets(tmp_path)


def _service(store: Store, clock: FakeClock, secrets: Secrets, *, leader: bool = True) -> IncidentService:
    return IncidentService(
        store, clock, secrets.settings, FakeExecutor(), manual_rollback=lambda: MANUAL_QUORUM, is_leader=lambda: leader
    )


@asynccontextmanager
async def _two_writers(store: Store, secrets: Secrets) -> AsyncIterator[tuple[IncidentService, IncidentService]]:
    """Two replicas' services on one database, each with its own store (engine, pool)."""
    other_store = Store(store.url.render_as_string(hide_password=False))
    clock = FakeClock()
    one, two = _service(store, clock, secrets), _service(other_store, clock, secrets, leader=False)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()
        await other_store.close()


def _for(i: int, fingerprint: str) -> tuple[Any, Any]:
    target = Target("storm", f"web-{i}")
    return replace(decision(CTO_AND_DATA), targets=(target,)), replace(alert(fingerprint), target=target)


def _count_commits(store: Store) -> Counter[str]:
    seen: Counter[str] = Counter()

    @event.listens_for(store.engine.sync_engine, "commit")
    def count(_conn: Any) -> None:
        seen["commits"] += 1

    return seen


def _count_inserts(store: Store, table: str) -> Counter[str]:
    seen: Counter[str] = Counter()

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} "):
            seen[table] += 1

    return seen


async def _facts(store: Store) -> dict[str, Any]:
    async with store.transaction() as s:
        incidents = (await s.execute(select(IncidentRow.id, IncidentRow.group_key))).all()
        alerts = Counter((await s.scalars(select(IncidentAlertRow.incident_id))).all())
        audited = set((await s.scalars(select(AuditRow.incident_id))).all())
        outbox = (await s.execute(select(OutboxRow.incident_id, OutboxRow.payload))).all()
        opened = (await s.execute(select(func.count()).where(IncidentRow.open.is_(True)))).scalar_one()
    return {
        "per_group": Counter(Counter(g for _, g in incidents).values()),
        "ids": {i for i, _ in incidents},
        "alerts": alerts,
        "audited": audited,
        "outbox": outbox,
        "open": opened,
    }


async def test_a_storm_of_new_groups_opens_one_incident_each_in_shared_transactions(
    store: Store, approver_secrets: Secrets
) -> None:
    service = _service(store, FakeClock(), approver_secrets)
    inserts = _count_inserts(store, "incidents")
    try:
        decided = await asyncio.gather(*(service.decide(*_for(i, f"fp-{i}")) for i in range(GROUPS)))
    finally:
        await service.close()
    facts = await _facts(store)
    assert facts["per_group"] == {1: GROUPS}
    assert facts["open"] == GROUPS
    assert {d if isinstance(d, str) else d.id for d in decided} == facts["ids"]
    assert all(facts["alerts"][i] == 1 for i in facts["ids"])
    assert facts["audited"] >= facts["ids"]
    # Every notification carries the record of its own incident, as a lone opening's does.
    carried = Counter(incident_id for incident_id, _ in facts["outbox"])
    assert set(carried) == facts["ids"]
    for incident_id, payload in facts["outbox"]:
        record = (json.loads(payload) if isinstance(payload, str) else payload)["incident"]
        assert record["id"] == incident_id, record
        (target,) = record["decision"]["targets"]  # storm/web-<i>, whose alert is fp-<i>
        assert [a["fingerprint"] for a in record["alerts"]] == [f"fp-{target.removeprefix('storm/web-')}"], record
    # Shared: 120 openings at once are far fewer INSERT statements than incidents.
    assert 0 < inserts["incidents"] <= GROUPS // 4, inserts


async def test_two_writers_opening_the_same_groups_at_once_make_one_incident_per_group(
    store: Store, approver_secrets: Secrets
) -> None:
    async with _two_writers(store, approver_secrets) as (one, two):
        both = ((one, "a"), (two, "b"))
        await asyncio.gather(*(s.decide(*_for(i, f"{name}-{i}")) for i in range(GROUPS) for s, name in both))
    facts = await _facts(store)
    assert facts["per_group"] == {1: GROUPS}, facts["per_group"]
    assert sorted(facts["alerts"].values()) == [2] * GROUPS


async def test_alerts_joining_open_incidents_at_once_share_transactions_and_each_joins_once(
    store: Store, approver_secrets: Secrets
) -> None:
    """40 open incidents, then 5 alerts for each decided at once by two writers, every alert sent to both."""
    groups = 40
    async with _two_writers(store, approver_secrets) as (one, two):
        for i in range(groups):
            await one.decide(*_for(i, f"first-{i}"))
        commits = _count_commits(store)
        alerts = [_for(i, f"fp-{i}-{k}") for k in range(5) for i in range(groups)]
        await asyncio.gather(*(s.decide(*a) for a in alerts for s in (one, two)))
    facts = await _facts(store)
    assert facts["per_group"] == {1: groups}, facts["per_group"]
    assert sorted(facts["alerts"].values()) == [6] * groups  # the first alert and five joined, each once
    async with store.transaction() as s:
        joined = Counter((await s.scalars(select(AuditRow.incident_id).where(AuditRow.action == Decided.name))).all())
    assert sorted(joined.values()) == [6] * groups, joined
    # This writer's 200 joins were written in far fewer transactions than joins.
    assert 0 < commits["commits"] < groups * 5 // 2, commits
