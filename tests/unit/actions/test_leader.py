"""Leader election settings, the always-leader mode without a Lease, and the renew-deadline rule."""

from __future__ import annotations

import asyncio

import pytest

from daemon.actions.fence import FencingToken
from daemon.actions.leader import LeaderElector
from daemon.config import LeaderElectionSettings
from daemon.errors import ConfigError
from daemon.metrics import IS_LEADER


async def test_disabled_is_always_leader_until_stopped() -> None:
    elector = LeaderElector(None, LeaderElectionSettings(enabled=True), "solo")  # no cluster: nothing to elect on
    assert elector.is_leader
    assert elector.elected.is_set()
    assert IS_LEADER._value.get() == 1
    task = asyncio.create_task(elector.run())
    await asyncio.sleep(0)
    assert not task.done()  # parks like a campaign, so the app's guarded task does not "exit"
    await elector.stop()
    await task
    assert not elector.is_leader


def test_impossible_durations_fail_at_construction() -> None:
    bad = LeaderElectionSettings(enabled=True, lease_duration_s=5, renew_deadline_s=8)
    with pytest.raises(ConfigError, match="lease_duration must be greater than renew_deadline"):
        LeaderElector(object(), bad, "me")  # type: ignore[arg-type]


class FakeTime:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def campaigning(clock: FakeTime, identity: str = "replica-a") -> LeaderElector:
    settings = LeaderElectionSettings(enabled=True, lease_duration_s=6, renew_deadline_s=4, retry_period_s=1)
    return LeaderElector(object(), settings, identity, monotonic=clock)  # type: ignore[arg-type]


def test_leadership_lasts_until_the_renew_deadline_after_the_last_renewal() -> None:
    clock = FakeTime()
    elector = campaigning(clock)
    assert not elector.is_leader
    assert not elector.known  # no campaign round yet: /readyz waits
    term = FencingToken("replica-a", 1)
    elector.renewed(term, at=clock.now)
    assert elector.is_leader
    assert elector.known
    assert elector.held() == term
    assert IS_LEADER._value.get() == 1
    clock.now += 3.99
    assert elector.is_leader
    elector.renewed(term, at=clock.now)  # each renewal moves the deadline
    clock.now += 3.99
    assert elector.is_leader
    clock.now += 0.01
    # Before the lease (6 s) can expire for a standby, this replica no longer believes it leads.
    assert not elector.is_leader
    assert elector.held() is None


def test_the_deadline_counts_from_when_the_renewal_was_sent() -> None:
    clock = FakeTime()
    elector = campaigning(clock)
    sent = clock.now
    clock.now += 3.5  # a slow apiserver: the answer came 3.5 s after the request left
    elector.renewed(FencingToken("replica-a", 1), at=sent)
    clock.now += 0.5
    assert not elector.is_leader


def test_a_standby_knows_its_role_once_it_saw_another_holder() -> None:
    clock = FakeTime()
    elector = campaigning(clock, "replica-b")
    elector.observed(None)  # a released Lease is not an answer yet: this round may still acquire
    assert not elector.known
    elector.observed("replica-b")  # our own stale record: the round goes on to renew it
    assert not elector.known
    elector.observed("replica-a")
    assert elector.known
    assert not elector.is_leader


def test_demotion_stops_leading_at_once_and_wakes_the_workers_waiting_for_it() -> None:
    clock = FakeTime()
    elector = campaigning(clock)
    elector.renewed(FencingToken("replica-a", 1), at=clock.now)
    assert not elector.not_leading.is_set()
    elector.demote("the Lease names replica-b")
    assert not elector.is_leader
    assert elector.not_leading.is_set()
    assert not elector.elected.is_set()
    assert IS_LEADER._value.get() == 0
