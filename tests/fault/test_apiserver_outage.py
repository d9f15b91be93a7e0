"""The apiserver is gone for 30 s while a rollback is due: rollbackd rolls back within 10 s of recovery.

``rollbackd run`` (real process) is started against the test cluster; the
kube-apiserver is stopped (etcd, controllers and KWOK keep running); an alert
that triggers an immediate rollback arrives and is accepted; the executor's
attempts fail with connection errors and are retried with capped backoff; 30 s
later the apiserver comes back on the same port. rollbackd's undo must land
(the previous revision's template) within 10 s of the apiserver answering, and
the Deployment must end at revision 3 — exactly one undo — and Ready. Ready
itself waits for the controller-manager, which needs 50-85 s to reconnect after
an outage on its own; the test allows for that and prints both times.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.fixtures import rules_file
from tests.kube_util import deploy_with_history, rollout_state
from tests.stack.kube import KubeCluster
from tests.webhooks import probe_webhook

pytestmark = [pytest.mark.fault, pytest.mark.integration]

OUTAGE_S = float(os.environ.get("ROLLBACKD_FAULT_OUTAGE_S", "30"))
RECOVERY_BUDGET_S = 10.0


def test_rollback_completes_soon_after_the_apiserver_returns(kube: KubeCluster, namespace: str, tmp_path: Path) -> None:
    rules = rules_file("rollback-now", tmp_path / "rules")
    name = f"outage-{uuid.uuid4().hex[:4]}"
    deploy_with_history(kube, namespace, [name])
    daemon = DaemonProcess(tmp_path / "rollbackd", rules=[rules], kubeconfig=kube.kubeconfig, log_level="info").start()
    try:
        kube.stop_apiserver()
        try:
            resp = httpx.post(
                f"{daemon.url}/webhooks/alertmanager",
                content=probe_webhook(namespace, name),
                headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
                timeout=10,
            )
            assert resp.status_code == 200, "alerts are accepted while the cluster is unreachable"
            time.sleep(OUTAGE_S)
        finally:
            kube.start_apiserver()
        recovered = time.monotonic()
        state = rollout_state(kube, namespace, name)
        # rollbackd's PATCH sets the template itself; the revision annotation and Ready come from
        # the controller-manager, whose client-go backoff after an outage takes 50-85 s on its own.
        while time.monotonic() - recovered < 30 and not state[1].endswith(":v1"):
            time.sleep(0.1)
            state = rollout_state(kube, namespace, name)
        patched_after = time.monotonic() - recovered
        while time.monotonic() - recovered < 150 and not (state[0] >= 3 and state[2]):
            time.sleep(0.2)
            state = rollout_state(kube, namespace, name)
        ready_after = time.monotonic() - recovered
        time.sleep(2)
        final = rollout_state(kube, namespace, name)
    finally:
        daemon.stop()
    print(f"\napiserver back -> rolled back in {patched_after:.2f}s, Ready in {ready_after:.2f}s; final {final}")
    assert final[0] == 3, f"{final}\n{daemon.log_tail(40)}"
    assert final[1].endswith(":v1"), final
    assert patched_after <= RECOVERY_BUDGET_S, f"rolled back {patched_after:.1f}s after recovery\n{daemon.log_tail(40)}"
