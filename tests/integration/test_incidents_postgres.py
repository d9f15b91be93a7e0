"""Incidents on the real PostgreSQL: two replicas share one database and race on the same incident.

Two approvals arrive at the same moment through two replicas; optimistic
concurrency (the version column) makes one retry, both approvals count, the
quorum is met once and the leader rolls back exactly once. A standby replica
never acts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.clock import FakeClock
from daemon.incidents.service import IncidentService
from daemon.store.db import Store
from tests.unit.incidents.conftest import MANUAL_QUORUM, FakeExecutor, Secrets, make_secrets
from tests.unit.incidents.test_service import CTO_AND_DATA, alert, decision

pytestmark = pytest.mark.integration


@pytest.fixture
def approver_secrets(tmp_path: Path) -> Secrets:
    return make_secrets(tmp_path)


async def test_two_replicas_race_on_one_incident(pg_store: Store, approver_secrets: Secrets) -> None:
    clock = FakeClock()
    executor = FakeExecutor()

    def replica(leader: bool) -> IncidentService:
        return IncidentService(
            pg_store,
            clock,
            approver_secrets.settings,
            executor,
            manual_rollback=lambda: MANUAL_QUORUM,
            is_leader=lambda: leader,
        )

    leader, standby = replica(True), replica(False)
    try:
        view = await standby.on_decision(decision(CTO_AND_DATA), alert())
        codes = {n: approver_secrets.totp[n].at(clock.now()) for n in ("ana", "dan")}
        await asyncio.gather(
            standby.approve(view.id, "ana", codes["ana"]),
            standby.approve(view.id, "dan", codes["dan"]),
        )
        after = await leader.get(view.id)
        assert after.state == "approved"  # the standby does not act
        assert sorted(a.approver for a in after.approvals) == ["ana", "dan"]
        assert executor.requests == []
        assert await leader.resume() == [view.id]
        await leader.idle()
        assert (await leader.get(view.id)).state == "resolved"
        assert len(executor.requests) == 1
    finally:
        await leader.close()
        await standby.close()


async def test_sixteen_concurrent_openers_on_two_replicas_make_one_incident(
    pg_store: Store, approver_secrets: Secrets
) -> None:
    """No replica sees the other's uncommitted incident: the database's index decides, the loser joins."""
    clock = FakeClock()
    replicas = [
        IncidentService(
            pg_store, clock, approver_secrets.settings, FakeExecutor(),
            manual_rollback=lambda: MANUAL_QUORUM, is_leader=lambda: False,
        )
        for _ in range(2)
    ]  # fmt: skip
    try:
        views = await asyncio.gather(
            *(replicas[i % 2].on_decision(decision(CTO_AND_DATA), alert(f"fp{i}")) for i in range(16))
        )
        assert len({v.id for v in views}) == 1  # every opener got the same incident, none an error
        record = await replicas[0].get(views[0].id)
        assert sorted(a.fingerprint for a in record.alerts) == sorted(f"fp{i}" for i in range(16))
        assert len(await replicas[0].list(open_only=True)) == 1
    finally:
        for r in replicas:
            await r.close()
