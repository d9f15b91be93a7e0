"""Leader election on a real Lease: exactly one leader, and a standby takes over when it goes.

Lease 4 s, renew deadline 3 s, retry 1 s. A killed leader (task cancelled, the
Lease not released) is replaced once the Lease expires: within the lease
duration after its last renewal, i.e. at most lease + retry after the kill. A
leader that stops gracefully releases the Lease, and the standby takes it at
its next retry.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from daemon.actions.leader import LeaderElector
from daemon.config import LeaderElectionSettings

pytestmark = pytest.mark.integration

LEASE_S, RENEW_S, RETRY_S = 4.0, 3.0, 1.0


async def until(condition: Any, within: float) -> float:
    """Seconds until ``condition()`` holds; fails after ``within`` seconds."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < within, f"condition not met within {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def electors(kube_api: Any, namespace: str) -> list[LeaderElector]:
    lease = LeaderElectionSettings(
        enabled=True, namespace=namespace, lease_duration_s=LEASE_S, renew_deadline_s=RENEW_S, retry_period_s=RETRY_S
    )
    return [LeaderElector(kube_api, lease, f"replica-{i}") for i in range(2)]


async def _exactly_one_leader(pair: list[LeaderElector]) -> tuple[LeaderElector, LeaderElector]:
    await until(lambda: any(e.is_leader for e in pair), LEASE_S + 5)
    # Hold for longer than a lease: the leader renews, the standby never grabs it.
    for _ in range(int((LEASE_S + 2) / 0.1)):
        assert sum(e.is_leader for e in pair) == 1
        await asyncio.sleep(0.1)
    leader = next(e for e in pair if e.is_leader)
    return leader, next(e for e in pair if e is not leader)


async def test_killed_leader_is_replaced_within_the_lease(kube_api: Any, namespace: str) -> None:
    pair = electors(kube_api, namespace)
    tasks = {e.identity: asyncio.create_task(e.run()) for e in pair}
    try:
        leader, standby = await _exactly_one_leader(pair)
        tasks[leader.identity].cancel()  # a crash: no release
        await asyncio.gather(tasks[leader.identity], return_exceptions=True)
        assert not leader.is_leader
        took = await until(lambda: standby.is_leader, LEASE_S + RETRY_S + 2)
        assert took <= LEASE_S + RETRY_S + 0.5, took
        assert took >= LEASE_S - RETRY_S - 0.5, took  # it did wait for the lease: never two leaders
    finally:
        for e in pair:
            await e.stop()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_stopped_leader_hands_over_at_the_next_retry(kube_api: Any, namespace: str) -> None:
    pair = electors(kube_api, namespace)
    tasks = [asyncio.create_task(e.run()) for e in pair]
    try:
        leader, standby = await _exactly_one_leader(pair)
        await leader.stop()
        assert not leader.is_leader
        took = await until(lambda: standby.is_leader, RETRY_S + 2)
        assert took <= RETRY_S + 1, took
    finally:
        for e in pair:
            await e.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
