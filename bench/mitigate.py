"""Time to mitigate: metric breach → Deployment rolled back and Ready, with the share of each stage.

Real components end to end: a test exporter, Prometheus (1 s scrape and
evaluation, ``for: 2s``), Alertmanager (group_wait 1 s), ``rollbackd run``
(own process, SQLite), a Kubernetes control plane with KWOK. Per run, a fresh
Deployment at revision 2 and a fresh alert name; the bench raises the error
ratio and timestamps:

- firing: Prometheus' ``/api/v1/alerts`` shows the alert firing (polled);
- webhook: rollbackd's inbox row for the alert (``received_at``, wall clock);
- patch: a watch sees the Deployment's template back at ``:v1``;
- ready: the Deployment reports every replica updated, ready and available.

The baseline in the same run is the alert path alone (breach → webhook),
which rollbackd does not control. Target: ≤ 8 s in total.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import median, ratio
from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.fixtures import prometheus_rules, rules_file


def _ready(dep: dict[str, Any]) -> bool:
    spec, status = dep["spec"], dep.get("status", {})
    return (
        spec["template"]["spec"]["containers"][0]["image"].endswith(":v1")
        and status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("readyReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
        and status.get("replicas") == spec["replicas"]
    )


def _received_at(db: Path, alertname: str) -> float | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute(
            "SELECT received_at FROM inbox WHERE kind = 'alert' AND payload LIKE ? ORDER BY id LIMIT 1",
            (f"%{alertname}%",),
        ).fetchone()
    if row is None:
        return None
    when = datetime.fromisoformat(str(row[0]))
    return when.timestamp() if when.tzinfo else when.replace(tzinfo=datetime.now().astimezone().tzinfo).timestamp()


def one_run(kube: Any, prom: Any, exporter: Any, daemon: DaemonProcess, ns: str) -> dict[str, float]:
    from tests.kube_util import TemplateWatch, deploy_with_history  # noqa: PLC0415 - needs the stack

    name = f"web-{uuid.uuid4().hex[:6]}"
    alertname = f"MitigateErrorRate{uuid.uuid4().hex[:6]}"
    deploy_with_history(kube, ns, [name], replicas=2)
    labels = {"namespace": ns, "deployment": name}
    exporter.set("http_error_ratio", 0.0, labels=labels)
    prom.configure(rules=prometheus_rules("mitigate", alertname=alertname, deployment=name))
    exporter.wait_scraped(timeout=60)
    exporter.wait_scraped(timeout=60)
    watch = TemplateWatch(kube, ns)
    try:
        wall0, t0 = time.time(), time.perf_counter()
        exporter.set("http_error_ratio", 0.2, labels=labels)
        firing = patch = ready = webhook = None
        deadline = t0 + 120
        while time.perf_counter() < deadline and ready is None:
            now = time.perf_counter()
            if firing is None and any(
                a["labels"].get("alertname") == alertname and a["state"] == "firing" for a in prom.alerts()
            ):
                firing = now - t0
            if patch is None and name in watch.back_at_v1:
                patch = watch.back_at_v1[name] - t0
            if patch is not None and _ready(kube.kubectl_json("-n", ns, "get", "deployment", name)):
                ready = time.perf_counter() - t0
            time.sleep(0.05)
        received = _received_at(daemon.db, alertname)
        webhook = None if received is None else received - wall0
    finally:
        watch.close()
        exporter.set("http_error_ratio", 0.0, labels=labels)
    if None in (firing, webhook, patch, ready):
        raise RuntimeError(f"run incomplete: firing={firing} webhook={webhook} patch={patch} ready={ready}")
    assert firing is not None
    assert webhook is not None
    assert patch is not None
    assert ready is not None
    return {"firing": firing, "webhook": webhook, "patch": patch, "ready": ready}


def run(runs: int, workdir: Path) -> dict[str, Any]:
    from tests.stack.exporter import Exporter  # noqa: PLC0415 - the stack is a test utility
    from tests.stack.kube import KubeCluster  # noqa: PLC0415
    from tests.stack.prometheus import Alertmanager, AlertmanagerTarget, Prometheus, WebhookReceiver  # noqa: PLC0415

    kube = KubeCluster(workdir / "kube")
    prom = Prometheus(workdir / "prometheus")
    am = Alertmanager(workdir / "alertmanager", group_wait="1s", group_interval="1s")
    exporter = Exporter().start()
    rules = rules_file("mitigate", workdir / "rules")
    daemon: DaemonProcess | None = None
    results: list[dict[str, float]] = []
    try:
        kube.start()
        am.start()
        prom.start()
        ns = f"mitigate-{uuid.uuid4().hex[:6]}"
        kube.kubectl("create", "namespace", ns)
        daemon = DaemonProcess(
            workdir / "rollbackd",
            rules=[rules],
            kubeconfig=kube.kubeconfig,
            extra={"kubernetes": {"rollout_timeout_s": 120}},
        ).start()
        am.configure(webhook=WebhookReceiver(f"{daemon.url}/webhooks/alertmanager", INGEST_TOKEN))
        prom.configure(scrape_targets=[exporter.address], alertmanagers=[AlertmanagerTarget(am.address)])
        for _ in range(runs):
            results.append(one_run(kube, prom, exporter, daemon, ns))
    finally:
        if daemon is not None:
            daemon.stop()
        for service in (prom, am, kube, exporter):
            service.stop()
    med = {k: median([r[k] for r in results]) for k in ("firing", "webhook", "patch", "ready")}
    total = med["ready"]
    stages = {
        "breach_to_firing (Prometheus, for: 2s)": med["firing"],
        "firing_to_webhook (Prometheus -> Alertmanager group_wait 1s -> rollbackd)": med["webhook"] - med["firing"],
        "webhook_to_patch (rollbackd decides and patches)": med["patch"] - med["webhook"],
        "patch_to_ready (controller + KWOK roll the pods)": med["ready"] - med["patch"],
    }
    return {
        "benchmark": "mitigate",
        "unit": "s",
        "runs": runs,
        "breach_to_ready": {"median": round(total, 2), "runs": [round(r["ready"], 2) for r in results]},
        "baseline_alert_path_breach_to_webhook": round(med["webhook"], 2),
        "ratio_total_vs_alert_path": ratio(total, med["webhook"]),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "target_s": 8.0,
        "met": total <= 8.0,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mitigate-") as tmp:
        result = run(args.runs, Path(tmp))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
