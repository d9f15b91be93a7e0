"""Incidents: how fast a storm on distinct workloads opens incidents, and how fast the open ones list.

``rollbackd run`` in its own process (SQLite store, or PostgreSQL with
``--store postgres``) with one rule that opens an incident awaiting an
Engineering Lead's approval for every ``BenchOpen`` alert. ``--incidents``
firing alerts, each naming a different Deployment, are posted in webhooks of
100; the time until that many incidents are open (counted in the store) gives
incidents opened per second. Then the open incidents are read the two ways a
responder does:
- ``GET /api/v1/incidents?open=true&limit=1000`` (and ``limit=50``), p50/p95
  over ``--reads`` requests on one keep-alive client, after the first such
  read (reported alone: it builds every record, later reads of unchanged
  incidents reuse them);
- ``rollbackd incidents list --open --limit 1000 --output json`` as a command,
  whose time includes the interpreter's start; ``--version`` of the same
  command is its baseline in the same run (start-up alone);
- the incident pages, signed in: ``GET /incidents`` (the HTML list, its
  first render reported alone, and how many rows it has) and one incident's
  page ``GET /incidents/{id}``, p50/p95.
Targets: ≥ 1,000 incidents/s; p95 ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import median, summary
from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, REPO, DaemonProcess
from tests.webhooks import firing_alert

RULES = """\
apiVersion: rollbackd/v1
roles: [Engineering Lead]
channels:
  ops:
    slack: "#ops"
decisions:
  - name: bench-open
    match: ['alertname="BenchOpen"']
    severity: P2
    action: rollback_within
    within: 1h
    approval: {all_of: [Engineering Lead], deadline: 1h, on_deadline: hold}
    channels: [ops]
"""
BATCH = 100


def p95(values: list[float]) -> float:
    return float(statistics.quantiles(values, n=20, method="inclusive")[18]) if len(values) > 1 else values[0]


def bodies(n: int) -> list[bytes]:
    run = uuid.uuid4().hex[:8]
    alerts = [firing_alert("BenchOpen", "bench", f"web-{run}-{i}", i, run) for i in range(n)]
    return [
        orjson.dumps({
            "version": "4", "groupKey": f"{{}}:{{run=\"{run}-{s}\"}}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "rollbackd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager.local", "alerts": alerts[s : s + BATCH],
        })
        for s in range(0, n, BATCH)
    ]  # fmt: skip


def open_count(client: httpx.Client, url: str) -> int:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    resp = client.get(f"{url}/api/v1/incidents?open=true&limit=1000", headers=auth)
    resp.raise_for_status()
    return len(resp.json()["incidents"])


def counter(daemon: DaemonProcess, pg: Any) -> Callable[[], int]:
    """Open incidents counted in the store itself: polling the API would load the daemon being measured."""
    sql = "SELECT count(*) FROM incidents WHERE open"
    if pg is not None:
        return lambda: int(pg.psql(sql).strip() or 0)

    def count() -> int:
        with sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute(sql).fetchone()[0])

    return count


def open_incidents(
    client: httpx.Client, daemon: DaemonProcess, count: Callable[[], int], n: int, timeout: float
) -> float:
    """Post ``n`` alerts on distinct Deployments; seconds until ``n`` incidents are open."""
    auth = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    start = time.perf_counter()
    for body in bodies(n):
        while (
            resp := client.post(f"{daemon.url}/webhooks/alertmanager", content=body, headers=auth)
        ).status_code == 503:
            time.sleep(0.05)
        if resp.status_code != 200:
            raise RuntimeError(f"webhook: HTTP {resp.status_code}: {resp.text[:300]}")
    while time.perf_counter() - start < timeout:
        if count() >= n:
            return time.perf_counter() - start
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {n} incidents open after {timeout}s")


def timed_get(client: httpx.Client, url: str, reads: int) -> list[float]:
    out = []
    for _ in range(reads):
        t = time.perf_counter()
        resp = client.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        out.append((time.perf_counter() - t) * 1000)
        resp.raise_for_status()
    return out


def sign_in(client: httpx.Client, url: str) -> None:
    """A session of the incident pages on ``client`` (its cookie jar), with the admin token."""
    form = client.get(f"{url}/signin")
    form.raise_for_status()
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if found is None:
        raise RuntimeError("no CSRF field in the sign-in form")
    resp = client.post(f"{url}/signin", data={"csrf": found.group(1), "token": ADMIN_TOKEN, "next": "/incidents"})
    if resp.status_code != 303:
        raise RuntimeError(f"sign-in: HTTP {resp.status_code}")


def timed_page(client: httpx.Client, url: str, reads: int) -> tuple[list[float], str]:
    out, html = [], ""
    for _ in range(reads):
        t = time.perf_counter()
        resp = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status_code}")
        html = resp.text
    return out, html


def timed_cli(daemon: DaemonProcess, args: list[str], runs: int, workdir: Path) -> list[float]:
    token = workdir / "admin.token"
    token.write_text(ADMIN_TOKEN)
    rollbackd = str(Path(sys.executable).with_name("rollbackd"))
    argv = (
        [rollbackd, *args]
        if args == ["--version"]
        else [rollbackd, *args, "--url", daemon.url, "--token-file", str(token)]
    )
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, timeout=120, check=False, cwd=REPO, env=dict(os.environ))
        out.append((time.perf_counter() - t) * 1000)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return out


def run(n: int, reads: int, cli_runs: int, store: str, workdir: Path) -> dict[str, Any]:
    rules = workdir / "bench-open.yaml"
    rules.write_text(RULES)
    extra: dict[str, Any] = {}
    pg = None
    if store == "postgres":
        from tests.stack.postgres import Postgres  # noqa: PLC0415 - the stack is a test utility

        pg = Postgres(workdir / "pg")
        extra["store"] = {"url": pg.start()["dsn"]}
    try:
        daemon = DaemonProcess(workdir / "rollbackd", rules=[rules], extra=extra).start()
    except BaseException:
        if pg is not None:
            pg.stop()
        raise
    try:
        with httpx.Client(timeout=120) as client:
            took = open_incidents(client, daemon, counter(daemon, pg), n, timeout=max(600.0, n / 5))
            base = f"{daemon.url}/api/v1/incidents?open=true"
            # The first read builds every record (the reader's memo holds none yet); later reads of the
            # unchanged incidents are served from it.
            first = timed_get(client, f"{base}&limit=1000", 1)
            timed_get(client, f"{base}&limit=1000", 1)  # warm-up
            big = timed_get(client, f"{base}&limit=1000", reads)
            small = timed_get(client, f"{base}&limit=50", reads)
            listed = open_count(client, daemon.url)
        with httpx.Client(timeout=120) as browser:
            sign_in(browser, daemon.url)
            [page_first], html = timed_page(browser, f"{daemon.url}/incidents", 1)
            rows = len(re.findall(r'<tr class="open">', html))
            first_id = re.search(r'href="/incidents/([0-9a-f]+)"', html)
            if first_id is None:
                raise RuntimeError("the incident list page links no incident")
            page_list, _ = timed_page(browser, f"{daemon.url}/incidents", reads)
            page_one, _ = timed_page(browser, f"{daemon.url}/incidents/{first_id.group(1)}", reads)
        cli = timed_cli(
            daemon, ["incidents", "list", "--open", "--limit", "1000", "--output", "json"], cli_runs, workdir
        )
        startup = timed_cli(daemon, ["--version"], cli_runs, workdir)
    finally:
        daemon.stop()
        if pg is not None:
            pg.stop()
    return {
        "benchmark": "incidents",
        "store": store,
        "incidents": n,
        "opened_per_s": round(n / took, 1),
        "open_seconds": round(took, 2),
        "target_opened_per_s": 1000,
        "listed_open": listed,
        "get_limit_1000_first_ms": round(first[0], 1),
        "get_limit_1000_ms": {"p50": round(median(big), 1), "p95": round(p95(big), 1), "reads": reads},
        "get_limit_50_ms": {"p50": round(median(small), 1), "p95": round(p95(small), 1), "reads": reads},
        "cli_list_1000_ms": {**summary(cli), "p95": round(p95(cli), 1)},
        "page_list_rows": rows,
        "page_list_first_ms": round(page_first, 1),
        "page_list_ms": {"p50": round(median(page_list), 1), "p95": round(p95(page_list), 1), "reads": reads},
        "page_incident_ms": {"p50": round(median(page_one), 1), "p95": round(p95(page_one), 1), "reads": reads},
        "cli_startup_baseline_ms": summary(startup),
        "target_p95_ms": 200,
        "met": n / took >= 1000 and p95(big) <= 200,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-incidents-") as tmp:
        result = run(args.incidents, args.reads, args.cli_runs, args.store, Path(tmp))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
