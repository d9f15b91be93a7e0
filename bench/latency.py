"""Decision latency: webhook received → rollback PATCH seen by the apiserver, vs ``kubectl rollout undo``.

A real control plane (tests/stack KubeCluster) holds 2N Deployments at
revision 2. ``rollbackd run`` (own process, SQLite store) has one rule
(tests/fixtures/rules/rollback-now.yaml): ``alertname="LatencyProbe"`` →
``rollback_now``, no approval. For each of N
Deployments the bench posts one Alertmanager webhook naming it and times
until a watch on the Deployments sees its template back at ``:v1``. The
baseline, same run, same watch: ``kubectl rollout undo`` of each of the other
N Deployments, timed from the moment the bench starts the command. p50 and p99
of both and their ratio; target p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import ratio
from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.fixtures import rules_file
from tests.webhooks import probe_webhook


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
        "n": len(values),
    }


def run(alerts: int, workdir: Path) -> dict[str, Any]:
    from tests.kube_util import TemplateWatch, deploy_with_history  # noqa: PLC0415 - needs the stack
    from tests.stack.kube import KubeCluster  # noqa: PLC0415

    kube = KubeCluster(workdir / "kube")
    kube.start()
    ns = f"latency-{uuid.uuid4().hex[:6]}"
    rb_names = [f"rb-{i}" for i in range(alerts)]
    kc_names = [f"kc-{i}" for i in range(alerts)]
    rules = rules_file("rollback-now", workdir / "rules")
    daemon = None
    watch = None
    try:
        kube.kubectl("create", "namespace", ns)
        deploy_with_history(kube, ns, rb_names + kc_names)
        daemon = DaemonProcess(workdir / "rollbackd", rules=[rules], kubeconfig=kube.kubeconfig).start()
        watch = TemplateWatch(kube, ns)
        rb: list[float] = []
        kc: list[float] = []
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {INGEST_TOKEN}"}) as client:
            for rb_name, kc_name in zip(rb_names, kc_names, strict=True):
                body = probe_webhook(ns, rb_name)
                t0 = time.perf_counter()
                resp = client.post(
                    f"{daemon.url}/webhooks/alertmanager", content=body, headers={"Content-Type": "application/json"}
                )
                resp.raise_for_status()
                rb.append(watch.wait(rb_name, 60) - t0)
                t0 = time.perf_counter()
                kube.kubectl("-n", ns, "rollout", "undo", f"deployment/{kc_name}")
                kc.append(watch.wait(kc_name, 60) - t0)
                time.sleep(0.2)
    finally:
        if watch is not None:
            watch.close()
        if daemon is not None:
            daemon.stop()
        kube.stop()
    rb_s, kc_s = stats(rb), stats(kc)
    return {
        "benchmark": "latency",
        "what": "webhook POST sent -> Deployment template back at the previous revision in a watch",
        "rollbackd": rb_s,
        "kubectl_rollout_undo": kc_s,
        "p50_ratio_vs_kubectl": ratio(rb_s["p50_ms"], kc_s["p50_ms"]),
        "p99_ratio_vs_kubectl": ratio(rb_s["p99_ms"], kc_s["p99_ms"]),
        "target_p99_ms": 50,
        "met": rb_s["p99_ms"] <= 50,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        result = run(args.alerts, Path(tmp))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
