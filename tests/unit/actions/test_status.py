"""kubectl's rollout-status judgement, and the wait that gives up at the timeout in fake time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.actions.status import RolloutFailedError, RolloutTimeoutError, rollout_state, wait_for_rollout
from daemon.clock import FakeClock
from daemon.model import Target
from tests.unit.actions.factories import deployment


def with_status(**status: Any) -> dict[str, Any]:
    dep = deployment("web:v1", "4")
    dep["status"] = {"observedGeneration": 5, **status}
    return dep


@pytest.mark.parametrize(
    ("status", "done", "message"),
    [
        ({"observedGeneration": 4}, False, "Waiting for deployment spec update to be observed..."),
        ({"updatedReplicas": 1, "replicas": 2}, False, "1 out of 2 new replicas have been updated..."),
        ({"updatedReplicas": 2, "replicas": 3}, False, "1 old replicas are pending termination..."),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}, False, "1 of 2 updated replicas are available"),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}, True, '"web" successfully rolled out'),
    ],
)
def test_rollout_state_as_kubectl(status: dict[str, Any], done: bool, message: str) -> None:
    state = rollout_state(with_status(**status))
    assert state.done is done
    assert message in state.message
    assert state.revision == 4


def test_progress_deadline_is_a_failure() -> None:
    dep = with_status(
        updatedReplicas=1, conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    )
    with pytest.raises(RolloutFailedError, match='deployment "web" exceeded its progress deadline'):
        rollout_state(dep)


class StuckDeployment:
    """Implements the one call ``wait_for_rollout`` makes; the rollout never finishes."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls += 1
        return with_status(updatedReplicas=1, replicas=2)


async def test_wait_times_out_in_fake_time(clock: FakeClock) -> None:
    kube = StuckDeployment()
    start = clock.now()
    task = asyncio.create_task(wait_for_rollout(kube, Target("prod", "web"), clock, 300))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    while not task.done() and (clock.now() - start).total_seconds() < 400:
        await clock.advance(1)
    assert task.done()
    assert (clock.now() - start).total_seconds() == 300
    with pytest.raises(RolloutTimeoutError, match=r"not finished after 300s: .*1 out of 2 new replicas"):
        await task
    assert kube.calls == 301  # one look per second, the last one at the deadline
