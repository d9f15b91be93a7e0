"""The executor's fence on a real cluster: a fenced replica writes nothing, the next leader finishes.

Two cases. A scripted ``Fence`` (the same protocol the daemon's ``LeaseFence``
implements) refuses from the undo on: the undo is never sent, the target is
interrupted, the intent stays open with the first term's token, and a second
executor — the new leader — reconciles it and rolls back exactly once. Then
the real ``LeaseFence`` of a real elector on the test cluster's Lease, whose
local renewal is fresh, refuses the moment the Lease names another term.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from daemon.actions.executor import RollbackExecutor
from daemon.actions.fence import FencingToken, NotLeaderError
from daemon.actions.intents import IntentStore
from daemon.actions.leader import LeaderElector
from daemon.clock import SystemClock
from daemon.config import LeaderElectionSettings
from daemon.store.db import Store
from tests.integration.test_actions_executor import admin_api, request, settings, state
from tests.integration.test_actions_undo import deploy_revisions
from tests.stack.kube import KubeCluster

pytestmark = pytest.mark.integration
__all__ = ["admin_api"]  # the fixture, shared with the executor's tests

FIRST, SECOND = FencingToken("replica-a", 1), FencingToken("replica-b", 2)


class ScriptedFence:
    """Passes ``passes`` checks as ``token``, then refuses every one: the Lease was lost meanwhile."""

    def __init__(self, token: FencingToken, passes: int) -> None:
        self.token, self.passes = token, passes
        self.checks: list[FencingToken | None] = []

    async def check(self, expected: FencingToken | None = None) -> FencingToken:
        self.checks.append(expected)
        if len(self.checks) > self.passes:
            raise NotLeaderError("not the leader: scripted loss of the Lease")
        assert expected in (None, self.token)
        return self.token


async def test_a_fenced_replica_leaves_the_rollback_to_the_next_leader(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    deploy_revisions(kube, namespace, count=2)
    before = state(kube, namespace)
    req = request(namespace, "web")
    # Checks: prepare (stored with the intent), then the undo is refused (one target: no pause).
    old = ScriptedFence(FIRST, passes=1)
    with pytest.raises(NotLeaderError, match="left to the new leader"):
        await RollbackExecutor(admin_api, store, SystemClock(), settings(kube), fence=old).execute(req)
    assert old.checks == [None, FIRST]  # every write was checked against the intent's term
    after = state(kube, namespace)
    assert (after["revision"], after["image"], after["paused"]) == (before["revision"], before["image"], False)
    intent = await IntentStore(store).get(req.idempotency_key(req.targets[0]))
    assert intent is not None
    assert intent.state == "planned"  # not "failed": the new leader settles it
    assert FencingToken.from_detail(intent.detail["fence"]) == FIRST

    new = RollbackExecutor(admin_api, store, SystemClock(), settings(kube), fence=ScriptedFence(SECOND, 99))
    reconciled = await new.reconcile()
    assert [(r.before, r.after) for r in reconciled] == [("planned", "interrupted")]
    assert state(kube, namespace)["paused"] is False
    outcome = await new.execute(req)
    assert [t.result.value for t in outcome.targets] == ["rolled_back"], outcome
    final = state(kube, namespace)
    assert (final["revision"], final["image"]) == (before["revision"] + 1, "registry.local/web:v1")
    intent = await IntentStore(store).get(req.idempotency_key(req.targets[0]))
    assert intent is not None
    assert FencingToken.from_detail(intent.detail["fence"]) == SECOND


async def test_the_lease_fence_refuses_once_the_lease_names_another_term(
    kube: KubeCluster, namespace: str, store: Store, admin_api: Any
) -> None:
    deploy_revisions(kube, namespace, count=2)
    lease = LeaderElectionSettings(
        enabled=True, namespace=namespace, lease_duration_s=6, renew_deadline_s=4, retry_period_s=1
    )
    elector = LeaderElector(admin_api, lease, "replica-a")
    campaign = asyncio.create_task(elector.run())
    try:
        await asyncio.wait_for(elector.elected.wait(), 15)
        fence = elector.fence()
        term = await fence.check()
        assert term.holder == "replica-a"
        live: Any = json.loads(kube.kubectl("-n", namespace, "get", "lease", "rollbackd-leader", "-o", "json").stdout)
        assert live["spec"]["leaseTransitions"] == term.transitions  # the lock keeps the count

        # Another replica takes the Lease (as it would after this one's pause): same count + 1.
        live["spec"].update(holderIdentity="replica-b", leaseTransitions=term.transitions + 1)
        kube.kubectl("replace", "-f", "-", stdin=json.dumps(live))
        assert elector.is_leader  # its own renewal is still fresh: only the Lease tells
        executor = RollbackExecutor(admin_api, store, SystemClock(), settings(kube), fence=fence)
        with pytest.raises(NotLeaderError):
            await executor.execute(request(namespace, "web"))
        assert not elector.is_leader
        assert state(kube, namespace)["revision"] == 2  # nothing was written
    finally:
        await elector.stop()
        await campaign
