"""kill -9 at a random point of an automatic rollback, then restart: one undo, no lost incident.

``rollbackd run`` runs as a real process (SQLite store, a rule that rolls
back at once, the test cluster's kubeconfig). Per run: a fresh Deployment at
revision 2; one alert posted (its 200 means the alert is durable); SIGKILL to
the whole process after a random delay of 0-1.5 s — before, during or after
the PATCH; restart on the same store. Then the Deployment must end at
revision 3 with revision 1's template and Ready (an undo happened, exactly one:
a repeated undo would make it revision 4 with the v2 template), stay there,
and the incident must exist after the restart.

Runs: 5 by default, ``ROLLBACKD_FAULT_RUNS`` for more (20 in the issue's
acceptance run).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.fixtures import rules_file
from tests.kube_util import deploy_with_history, revision, rollout_state
from tests.stack.kube import KubeCluster
from tests.webhooks import probe_webhook

pytestmark = [pytest.mark.fault, pytest.mark.integration]

RUNS = int(os.environ.get("ROLLBACKD_FAULT_RUNS", "5"))


def _incidents(daemon: DaemonProcess) -> list[dict]:
    resp = httpx.get(f"{daemon.url}/api/v1/incidents", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    resp.raise_for_status()
    return [i for i in resp.json()["incidents"] if "probe-rollback-now" in str(i)]


def test_kill9_mid_rollback_never_undoes_twice_nor_loses_the_incident(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("ROLLBACKD_FAULT_SEED", str(time.time_ns()))))
    rules = rules_file("rollback-now", tmp_path / "rules")
    names = [f"k9-{i}-{uuid.uuid4().hex[:4]}" for i in range(RUNS)]
    deploy_with_history(kube, namespace, names)
    outcomes: list[str] = []
    for run, name in enumerate(names):
        assert revision(kube, namespace, name) == 2
        workdir = tmp_path / f"run{run}"
        daemon = DaemonProcess(workdir, rules=[rules], kubeconfig=kube.kubeconfig, log_level="info").start()
        delay = rng.uniform(0, 1.5)
        try:
            resp = httpx.post(
                f"{daemon.url}/webhooks/alertmanager",
                content=probe_webhook(namespace, name),
                headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
                timeout=10,
            )
            assert resp.status_code == 200, resp.text
            time.sleep(delay)
            rev_at_kill = rollout_state(kube, namespace, name)[0]
            daemon.kill()
            daemon.start()  # same workdir: same store, same config, new port
            deadline = time.monotonic() + 90
            state = rollout_state(kube, namespace, name)
            while time.monotonic() < deadline and not (state[0] >= 3 and state[2]):
                time.sleep(0.2)
                state = rollout_state(kube, namespace, name)
            time.sleep(3)  # anything still to come (a second undo) has had its chance
            final = rollout_state(kube, namespace, name)
            incidents = _incidents(daemon)
        finally:
            daemon.stop()
        outcomes.append(f"run {run}: kill after {delay:.2f}s at revision {rev_at_kill} -> {final}")
        assert final[0] == 3, f"expected exactly one undo (revision 3): {outcomes[-1]}\n{daemon.log_tail(40)}"
        assert final[1].endswith(":v1"), outcomes[-1]
        assert final[2], f"not Ready: {outcomes[-1]}"
        assert len(incidents) == 1, f"{outcomes[-1]}: incidents {incidents}"
    print("\n" + "\n".join(outcomes))
