"""Two ``rollbackd run`` processes on one PostgreSQL with a Lease: the way production runs replicas.

Used by the fault tests that are about several writers. Each replica is a real
process (``tests.daemon_process.DaemonProcess``) with its own instance name, both on
the same database, both electing a leader on a Lease in the test's namespace
with short durations so a failover takes seconds.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemon_process import DaemonProcess
from tests.metrics_util import samples, value
from tests.stack.kube import KubeCluster

LEASE = {"lease_duration_s": 6, "renew_deadline_s": 4, "retry_period_s": 1}


def replica_pair(
    tmp_path: Path, rules: Path, kube: KubeCluster, namespace: str, store_url: str, **extra: Any
) -> tuple[DaemonProcess, DaemonProcess]:
    """Two replicas, not started, sharing ``store_url`` and a Lease named after the test's namespace."""
    election = {"enabled": True, "namespace": namespace, "lease_name": f"rollbackd-{namespace}", **LEASE}
    pair = []
    for name in ("replica-a", "replica-b"):
        config = {"store": {"url": store_url}, "kubernetes": {"leader_election": election}, **extra}
        pair.append(
            DaemonProcess(
                tmp_path / name, rules=[rules], kubeconfig=kube.kubeconfig, instance=name, extra=config,
                log_level="info",
            )
        )  # fmt: skip
    return pair[0], pair[1]


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    """The value of ``name`` (summed over samples with ``labels``) on ``daemon``'s ``/metrics``; 0 when absent."""
    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
        return value(samples(resp.read().decode()), name, **labels)


def wait_for_leader(pair: tuple[DaemonProcess, DaemonProcess], within_s: float = 30.0) -> DaemonProcess:
    """The replica that reports ``rollbackd_leader 1``, once exactly one does."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        leading = [d for d in pair if metric(d, "rollbackd_leader") == 1]
        if len(leading) == 1:
            return leading[0]
        time.sleep(0.2)
    raise AssertionError(f"no single leader within {within_s} s:\n{pair[0].log_tail()}\n{pair[1].log_tail()}")
