"""The executor without a cluster: it reports a dry run loudly and persists nothing."""

from __future__ import annotations

from sqlalchemy import func, select
from structlog.testing import capture_logs

from daemon.actions.executor import RollbackExecutor
from daemon.clock import FakeClock
from daemon.config import KubernetesSettings
from daemon.model import RollbackRequest, Target, TargetResult
from daemon.store.db import Store
from daemon.store.tables import RollbackIntentRow


async def test_no_cluster_means_dry_run_said_loudly(store: Store, clock: FakeClock) -> None:
    executor = RollbackExecutor(None, store, clock, KubernetesSettings())
    req = RollbackRequest("inc1", (Target("prod", "api-gateway"), Target("prod", "ai-inference")), "test")
    with capture_logs() as logs:
        outcome = await executor.execute(req)
    assert [t.result for t in outcome.targets] == [TargetResult.DRY_RUN, TargetResult.DRY_RUN]
    assert all("no Kubernetes cluster reachable" in t.detail for t in outcome.targets)
    assert any(e["event"] == "rollback.no_cluster" and e["log_level"] == "warning" for e in logs)
    async with store.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(RollbackIntentRow)) == 0
    assert await executor.reconcile() == []
