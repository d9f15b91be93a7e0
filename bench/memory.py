"""Memory: RSS of one process holding 1,000 rules and 10,000 open incidents.

Built the way the daemon builds them, in this process: a ``RuleRegistry``
over a file of 1,000 decision rules (the same mix as bench/rules_scaling.py)
and an ``IncidentService`` on an SQLite store, fed 10,000 firing alerts for
distinct Deployments, each evaluated by the rules and opened as an incident
through ``decide`` (the pipeline's path). RSS (``VmRSS``) is read before anything is built
(the baseline: interpreter and imports) and after; the open incidents are
counted in the store. Target: ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bench.common import quiet
from bench.rules_scaling import rule_file
from daemon.actions.executor import RollbackExecutor
from daemon.clock import SystemClock
from daemon.config import KubernetesSettings
from daemon.deploys import DeployHistory
from daemon.incidents.service import IncidentService
from daemon.model import NO_APPROVAL, Alert, AlertStatus
from daemon.rules import RuleRegistry
from daemon.store.db import Store
from daemon.target import target_from_labels
from tests.daemon_process import rss_mb

TARGET_MB = 200.0


def rules(path: Path, count: int) -> None:
    doc = rule_file(count - 1)
    doc["decisions"].append(
        {
            "name": "memory-probe",
            "match": ['alertname="MemoryProbe"'],
            "severity": "P2",
            "action": "notify",
            "channels": ["slack"],
        }
    )
    path.write_text(yaml.safe_dump(doc))


def alert(i: int, now: datetime) -> Alert:
    labels = {"alertname": "MemoryProbe", "namespace": f"team-{i % 100}", "deployment": f"web-{i}", "env": "prod"}
    return Alert(
        "MemoryProbe",
        AlertStatus.FIRING,
        MappingProxyType(labels),
        MappingProxyType({"summary": "x"}),
        now,
        f"fp-{i}",
        "bench",
        target_from_labels(labels),
        value=0.9,
    )


async def run(incidents: int, rule_count: int, workdir: Path) -> dict[str, Any]:
    gc.collect()
    baseline = rss_mb()
    clock = SystemClock()
    rules_file = workdir / "rules.yaml"
    rules(rules_file, rule_count)
    registry = RuleRegistry([rules_file], clock)
    registry.load()
    after_rules = rss_mb()
    db = workdir / "memory.sqlite"
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.upgrade()
    executor = RollbackExecutor(None, store, clock, KubernetesSettings(), dry_run=True)
    service = IncidentService(store, clock, [], executor, manual_rollback=lambda: NO_APPROVAL)
    now = clock.now()
    start = time.perf_counter()
    try:
        for i in range(incidents):
            a = alert(i, now)
            for decision in registry.current.evaluate(a, DeployHistory()):
                await service.decide(decision, a)
        took = time.perf_counter() - start
        gc.collect()
        peak = rss_mb()
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        open_count = int(conn.execute("SELECT count(*) FROM incidents WHERE state != 'resolved'").fetchone()[0])
    return {
        "benchmark": "memory",
        "unit": "MiB",
        "rules": registry.current.rule_count,
        "open_incidents": open_count,
        "rss_baseline_imports": round(baseline, 1),
        "rss_after_rules": round(after_rules, 1),
        "rss_with_rules_and_incidents": round(peak, 1),
        "growth_over_baseline": round(peak - baseline, 1),
        "ratio_to_target": round(peak / TARGET_MB, 3),
        "target": TARGET_MB,
        "met": peak <= TARGET_MB and open_count >= incidents,
        "incidents_opened_per_s": round(incidents / took, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=1_000)
    args = parser.parse_args(argv)
    quiet()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        result = asyncio.run(run(args.incidents, args.rules, Path(tmp)))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
