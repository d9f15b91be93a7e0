"""Decision latency: webhook received → rollback PATCH seen by the apiserver, vs ``kubectl rollout undo``.

A real control plane (tests/stack KubeCluster) holds 2N Deployments at
revision 2. ``rollbackd run`` (own process, SQLite store) has one rule:
``alertname="LatencyProbe"`` → ``rollback_now``, no approval. For each of N
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import INGEST_TOKEN, DaemonProcess, iso, ratio

RULES = """\
apiVersion: rollbackd/v1
roles: [Engineering Lead]
channels:
  ops:
    slack: "#ops"
routing:
  P1: [ops]
decisions:
  - name: latency-probe
    description: bench - roll back at once, no approval
    match: ['alertname="LatencyProbe"']
    severity: P1
    action: rollback_now
    rollback_time_objective: 5m
    channels: [ops]
"""


def alert_body(ns: str, name: str) -> bytes:
    labels = {"alertname": "LatencyProbe", "namespace": ns, "deployment": name, "severity": "page"}
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": f"latency:{name}",
            "status": "firing",
            "receiver": "rollbackd",
            "groupLabels": {},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "http://am",
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {"value": "0.3"},
                    "startsAt": iso(datetime.now(UTC)),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": uuid.uuid4().hex[:16],
                }
            ],
        }
    )


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
    from bench.kube_util import TemplateWatch, deploy_with_history  # noqa: PLC0415 - needs the stack
    from tests.stack.kube import KubeCluster  # noqa: PLC0415

    kube = KubeCluster(workdir / "kube")
    kube.start()
    ns = f"latency-{uuid.uuid4().hex[:6]}"
    rb_names = [f"rb-{i}" for i in range(alerts)]
    kc_names = [f"kc-{i}" for i in range(alerts)]
    rules = workdir / "rules"
    rules.mkdir()
    (rules / "latency.yaml").write_text(RULES)
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
                body = alert_body(ns, rb_name)
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
