"""The fence before every cluster write, on a fake monotonic clock and a fake Lease.

The fence is built on the real ``LeaderElector`` (its freshness rule decides
``held()``); the Lease read is a function returning what the API server would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from daemon.actions.fence import FencingToken, LeaseFence, NotLeaderError, Unfenced, token_of
from daemon.actions.leader import LeaderElector
from daemon.config import LeaderElectionSettings

SETTINGS = LeaderElectionSettings(enabled=True, lease_duration_s=6, renew_deadline_s=4, retry_period_s=1)
ME = FencingToken("replica-a", 3)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLease:
    """The Lease as the API server serves it; ``during_read`` runs while the read is in flight."""

    def __init__(self, holder: str | None, transitions: int) -> None:
        self.holder, self.transitions = holder, transitions
        self.reads = 0
        self.during_read: Any = None

    async def __call__(self) -> Mapping[str, Any]:
        self.reads += 1
        if self.during_read is not None:
            self.during_read()
        spec: dict[str, Any] = {"leaseTransitions": self.transitions, "leaseDurationSeconds": 6}
        if self.holder is not None:
            spec["holderIdentity"] = self.holder
        return {"metadata": {"name": "rollbackd-leader"}, "spec": spec}


def leading(clock: FakeTime) -> LeaderElector:
    elector = LeaderElector(object(), SETTINGS, ME.holder, monotonic=clock)  # type: ignore[arg-type]
    elector.renewed(ME, clock())
    return elector


async def test_a_fresh_leader_named_by_the_lease_passes_and_gets_its_term() -> None:
    clock = FakeTime()
    lease = FakeLease(ME.holder, ME.transitions)
    fence = LeaseFence(leading(clock), lease)
    clock.now += 3.9
    assert await fence.check() == ME
    assert await fence.check(ME) == ME
    assert lease.reads == 2  # every check asks the API server, not a cached answer


async def test_a_stale_renewal_is_refused_without_asking_the_api_server() -> None:
    clock = FakeTime()
    lease = FakeLease(ME.holder, ME.transitions)  # even a Lease that still names us
    elector = leading(clock)
    fence = LeaseFence(elector, lease)
    clock.now += 4.0  # the renew deadline: the standby may take over 2 s later
    with pytest.raises(NotLeaderError, match="renew deadline"):
        await fence.check(ME)
    assert lease.reads == 0
    assert not elector.is_leader


@pytest.mark.parametrize(
    ("holder", "transitions"),
    [("replica-b", 4), (None, 3), ("replica-a", 5)],
    ids=["another-holder", "released", "same-name-later-term"],
)
async def test_a_lease_of_another_term_refuses_and_demotes(holder: str | None, transitions: int) -> None:
    clock = FakeTime()
    elector = leading(clock)
    fence = LeaseFence(elector, FakeLease(holder, transitions))
    with pytest.raises(NotLeaderError, match="fenced"):
        await fence.check(ME)
    assert not elector.is_leader  # stops its workers now, not at its own renew deadline
    assert elector.not_leading.is_set()


async def test_an_intent_of_an_earlier_term_is_refused() -> None:
    clock = FakeTime()
    lease = FakeLease(ME.holder, ME.transitions)
    fence = LeaseFence(leading(clock), lease)
    with pytest.raises(NotLeaderError, match="intent belongs to leadership term replica-a#2"):
        await fence.check(FencingToken("replica-a", 2))
    assert lease.reads == 0


async def test_a_pause_during_the_lease_read_is_caught_after_it() -> None:
    clock = FakeTime()
    lease = FakeLease(ME.holder, ME.transitions)
    fence = LeaseFence(leading(clock), lease)

    def paused_for_nine_seconds() -> None:
        clock.now += 9  # SIGSTOP while the request was in flight: the answer is stale by now

    lease.during_read = paused_for_nine_seconds
    with pytest.raises(NotLeaderError, match="renew deadline"):
        await fence.check(ME)


async def test_without_leader_election_the_fence_always_passes() -> None:
    fence = Unfenced("solo")
    assert await fence.check() == FencingToken("solo", 0)
    assert await fence.check(FencingToken("someone-else", 9)) == FencingToken("solo", 0)
    disabled = LeaderElector(None, LeaderElectionSettings(enabled=True), "solo")
    assert isinstance(disabled.fence(), Unfenced)


def test_the_token_round_trips_through_the_intent_detail() -> None:
    assert FencingToken.from_detail(ME.as_detail()) == ME
    assert FencingToken.from_detail(None) is None
    assert FencingToken.from_detail({"reason": "x"}) is None
    assert token_of({"spec": {"holderIdentity": "b", "leaseTransitions": 7}}) == FencingToken("b", 7)
    assert token_of({"spec": {"holderIdentity": "b"}}) == FencingToken("b", 0)
    assert token_of({"spec": {}}) is None


def test_not_leader_is_temporary_for_the_system_but_not_retried_here() -> None:
    exc = NotLeaderError("x")
    assert exc.reason == "not_leader"
    assert not exc.retriable
