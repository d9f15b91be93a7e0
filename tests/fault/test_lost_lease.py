"""A leader paused past its lease makes no write after it resumes; the new leader does the work.

Two ``rollbackd run`` processes, replica-a and replica-b, share one PostgreSQL
database and campaign on the test cluster's Lease (lease 6 s, renew deadline
4 s, retry 1 s), with a rule that rolls back at once. Two Deployments, d1 and
d2, start at revision 2. Watches on the Deployments and on the Lease start
before the fault and record every change with its resourceVersion, which the
single etcd orders globally: so each write to a Deployment is attributed to
the Lease holder of that moment.

1. replica-a leads. It is SIGSTOPped for longer than the lease, and d1's alert
   goes to replica-b (as Alertmanager does when one receiver hangs): a rollback
   is due while the leader is paused. replica-b takes the Lease and rolls d1 back.
2. replica-b is SIGSTOPped (so nobody else can write), replica-a gets SIGCONT
   and at once an alert for d2 — the situation in which a replica that still
   believes it leads acts. replica-a must not write until it holds the Lease
   again (the paused replica-b's lease has to expire first); then it rolls d2 back.
3. replica-b gets SIGCONT, now a stale leader itself, and must not write either.

Every spec write (a generation change) to d1 must fall in replica-b's term,
none after replica-a resumed; every spec write to d2 in replica-a's new term.
Each Deployment's revision rises by exactly one (2 → 3, back at ``:v1``), and
replica-a ran its recovery (reconcile, re-drive) in both of its terms.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.fixtures import rules_file
from tests.kube_util import deploy_with_history
from tests.stack.kube import KubeCluster
from tests.stack.postgres import Postgres
from tests.webhooks import probe_webhook

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.timeout(300)]

LEASE_S, RENEW_S, RETRY_S = 6, 4, 1
PAUSE_S = 9.0  # as in the report: past the lease (6 s), so the standby takes over
LEASE_NAME = "rollbackd-leader"
@dataclass(frozen=True)
class Seen:
    """One object version as a watch delivered it."""

    at: float  # time.monotonic() when the test received it
    rv: int
    fields: tuple[str, ...]


class Watch:
    """``kubectl get … --watch`` in a thread, every version recorded (the initial one included)."""

    def __init__(self, kube: KubeCluster, ns: str, what: list[str], columns: list[str]) -> None:
        template = "|".join(["{.metadata.resourceVersion}", *columns]) + '{"\\n"}'
        argv = [
            str(kube.bin / "kubectl"), f"--kubeconfig={kube.kubeconfig}", "-n", ns, "get", *what,
            "--watch", "-o", f"jsonpath={template}",
        ]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            rv, *fields = line.rstrip("\n").split("|")
            if rv.isdigit():
                with self._lock:
                    self.seen.append(Seen(time.monotonic(), int(rv), tuple(fields)))

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def until(what: str, condition: Callable[[], Any], within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.2)


def lease_holder(kube: KubeCluster, ns: str) -> str:
    done = kube.kubectl("-n", ns, "get", "lease", LEASE_NAME, "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def deployment(kube: KubeCluster, ns: str, name: str) -> tuple[int, str, bool]:
    dep: Any = kube.kubectl_json("-n", ns, "get", "deployment", name)
    spec, status = dep["spec"], dep.get("status", {})
    ready = (
        status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
    )
    rev = int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    return rev, spec["template"]["spec"]["containers"][0]["image"], ready


def post_alert(replica: DaemonProcess, ns: str, name: str) -> None:
    resp = httpx.post(
        f"{replica.url}/webhooks/alertmanager",
        content=probe_webhook(ns, name),
        headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


def incident_state(replica: DaemonProcess, name: str) -> str:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    resp = httpx.get(f"{replica.url}/api/v1/incidents", headers=auth, timeout=10)
    resp.raise_for_status()
    states = [i["state"] for i in resp.json()["incidents"] if name in str(i)]
    return states[0] if len(states) == 1 else ",".join(states)


def spec_writes(watch: list[Seen], name: str) -> list[Seen]:
    """The versions of ``name`` whose generation rose: a write to its spec (status updates do not count)."""
    versions = [s for s in watch if s.fields[0] == name]
    return [b for a, b in itertools.pairwise(versions) if int(b.fields[1]) > int(a.fields[1])]


def holder_at(lease: list[Seen], rv: int) -> tuple[str, int]:
    """Who held the Lease when the object version ``rv`` was written, and that Lease version."""
    before = [s for s in lease if s.rv < rv]
    last = max(before, key=lambda s: s.rv)
    return last.fields[0], last.rv


def replica(workdir: Path, name: str, rules: Path, kube: KubeCluster, store: str, namespace: str) -> DaemonProcess:
    election = {
        "enabled": True, "namespace": namespace, "lease_name": LEASE_NAME,
        "lease_duration_s": LEASE_S, "renew_deadline_s": RENEW_S, "retry_period_s": RETRY_S,
    }  # fmt: skip
    extra = {"store": {"url": store}, "kubernetes": {"leader_election": election}}
    return DaemonProcess(
        workdir / name, rules=[rules], kubeconfig=kube.kubeconfig, extra=extra, log_level="info", instance=name
    )


def rolled_back(kube: KubeCluster, ns: str, name: str) -> Callable[[], bool]:
    def done() -> bool:
        rev, _, ready = deployment(kube, ns, name)
        return rev >= 3 and ready

    return done


@dataclass
class Run:
    """What happened, for the assertions and the report."""

    deployments: list[Seen]
    lease: list[Seen]
    resumed_at: float
    notes: list[str]

    def report(self, names: tuple[str, ...]) -> str:
        return "\n".join(
            [*self.notes, "lease:", *(f"  {s.rv} {s.fields}" for s in self.lease),
             "deployments:", *(f"  {s.rv} {s.fields}" for s in self.deployments if s.fields[0] in names)]
        )  # fmt: skip


def pause_the_leader_twice(
    kube: KubeCluster, namespace: str, a: DaemonProcess, b: DaemonProcess, d1: str, d2: str
) -> Run:
    """Steps 1-3 of the module docstring, with watches running from before the first fault."""
    notes: list[str] = []
    a.start()
    until("replica-a holds the Lease", lambda: lease_holder(kube, namespace) == "replica-a", LEASE_S + 10)
    b.start()
    time.sleep(RETRY_S * 2)  # replica-b has campaigned and seen replica-a's Lease
    columns = [
        "{.metadata.name}",
        "{.metadata.generation}",
        "{.spec.paused}",
        "{.spec.template.spec.containers[0].image}",
    ]
    deployments = Watch(kube, namespace, ["deployments"], columns)
    lease = Watch(kube, namespace, ["lease", LEASE_NAME], ["{.spec.holderIdentity}", "{.spec.leaseTransitions}"])
    try:
        time.sleep(1.0)  # let both watches establish before anything changes
        # 1. The leader is paused; d1's rollback falls due; the standby takes over and does it.
        a.send(signal.SIGSTOP)
        paused_at = time.monotonic()
        post_alert(b, namespace, d1)
        until("replica-b takes the Lease", lambda: lease_holder(kube, namespace) == "replica-b", LEASE_S + 10)
        notes.append(f"replica-b took the Lease {time.monotonic() - paused_at:.1f}s after the pause")
        until(f"{d1} rolled back", rolled_back(kube, namespace, d1), 60)
        until(f"{d1}'s incident resolved", lambda: incident_state(b, d1) == "resolved", 30)
        time.sleep(max(0.0, paused_at + PAUSE_S - time.monotonic()))
        # 2. The old leader resumes while the new one is paused, and an alert arrives at once.
        b.send(signal.SIGSTOP)
        a.send(signal.SIGCONT)
        resumed_at = time.monotonic()
        notes.append(f"replica-a paused for {resumed_at - paused_at:.1f}s")
        post_alert(a, namespace, d2)
        until(f"{d2} rolled back", rolled_back(kube, namespace, d2), 60)
        notes.append(f"{d2} rolled back {time.monotonic() - resumed_at:.1f}s after replica-a resumed")
        # 3. The paused new leader resumes, stale in its turn; anything it would do has time to show.
        b.send(signal.SIGCONT)
        time.sleep(RENEW_S + RETRY_S * 3)
    finally:
        deployments.close()
        lease.close()
    return Run(deployments.snapshot(), lease.snapshot(), resumed_at, notes)


def test_paused_leader_makes_no_write_after_it_resumes(
    kube: KubeCluster, namespace: str, postgres: Postgres, tmp_path: Path
) -> None:
    rules = rules_file("rollback-now", tmp_path / "rules")
    suffix = uuid.uuid4().hex[:4]
    d1, d2 = f"ll1-{suffix}", f"ll2-{suffix}"
    deploy_with_history(kube, namespace, [d1, d2])
    store = postgres.create_database()
    a, b = (replica(tmp_path, name, rules, kube, store, namespace) for name in ("replica-a", "replica-b"))
    try:
        run = pause_the_leader_twice(kube, namespace, a, b, d1, d2)
    finally:
        for r in (a, b):
            r.send(signal.SIGCONT)  # a stopped process would not hear SIGTERM
            r.stop()
    report = run.report((d1, d2))
    print("\n" + report)

    d1_writes, d2_writes = spec_writes(run.deployments, d1), spec_writes(run.deployments, d2)
    assert d1_writes, report
    assert d2_writes, report
    for w in d1_writes:
        assert holder_at(run.lease, w.rv)[0] == "replica-b", f"{d1} written outside replica-b's term: {w}\n{report}"
    late = [w for w in d1_writes if w.at >= run.resumed_at]
    assert not late, f"{d1} written after replica-a resumed: {late}\n{report}"
    b_term = min(s.rv for s in run.lease if s.fields[0] == "replica-b")
    for w in d2_writes:
        holder, since = holder_at(run.lease, w.rv)
        # Written by the new term of replica-a, never while the paused replica-b's Lease stood.
        assert (holder, since > b_term) == ("replica-a", True), f"{d2} written under {holder}: {w}\n{report}"
    for name in (d1, d2):
        rev, image, ready = deployment(kube, namespace, name)
        assert (rev, image.endswith(":v1"), ready) == (3, True, True), f"{name}: {rev} {image} {ready}\n{report}"
    # Recovery (reconcile the intents left open, re-drive the incidents) ran in each of replica-a's terms.
    recoveries = (a.workdir / "rollbackd.log").read_text().count('"incidents resumed"')
    assert recoveries >= 2, f"replica-a recovered {recoveries} time(s) in two terms"
