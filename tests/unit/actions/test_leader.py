"""Leader election settings and the always-leader mode without a Lease."""

from __future__ import annotations

import asyncio

import pytest

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
