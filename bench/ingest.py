"""Ingest throughput: alerts/s through rollbackd's webhook vs the real Alertmanager vs orjson.

The same distinct alerts, in batches of 100, posted by one keep-alive client:
- rollbackd (``rollbackd run`` in its own process, SQLite store, shipped rules):
  ``POST /webhooks/alertmanager`` (version 4). A 200 means every alert of the
  batch is committed to the inbox; the bench checks the rows afterwards.
  The dispatcher then evaluates each against the rules; the time until the
  inbox is drained gives the processed rate as well.
- Alertmanager (Debian's ``prometheus-alertmanager``): ``POST /api/v2/alerts``
  with the same alerts in its postable form.
- the ceiling: ``orjson.loads`` of the same webhook bodies, in this process.

Runs alternate between the three so a busy machine slows each alike; medians
and ratios are reported.

``--variant join``: every alert (``BenchJoin``, on one of 200 Deployments)
matches a notify decision rule and joins one of 200 incidents opened before
the runs, so "processed" measures evaluation plus an incident update, not a
miss. ``--store postgres`` runs the daemon on the stack's PostgreSQL (a
throwaway cluster) instead of SQLite.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import median, ratio, summary, to_v2_postable
from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.inbox_util import inbox_counts
from tests.webhooks import firing_alert, webhook_body

BATCH = 100
JOIN_TARGETS = 200
JOIN_RULES = """\
apiVersion: rollbackd/v1
roles: [Engineering Lead]
channels:
  ops:
    slack: "#ops"
decisions:
  - name: bench-join
    match: ['alertname="BenchJoin"']
    severity: P3
    action: notify
    channels: [ops]
"""


def make_bodies(batches: int, variant: str = "miss") -> list[bytes]:
    run = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    if variant == "miss":
        return [webhook_body(run, b * BATCH, BATCH, now) for b in range(batches)]
    bodies = []
    for b in range(batches):
        alerts = [
            firing_alert("BenchJoin", "bench", f"web-{i % JOIN_TARGETS}", i, run)
            for i in range(b * BATCH, (b + 1) * BATCH)
        ]
        bodies.append(
            orjson.dumps({
                "version": "4", "groupKey": f"{{}}:{{run=\"{run}-{b}\"}}", "truncatedAlerts": 0, "status": "firing",
                "receiver": "rollbackd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                "externalURL": "http://alertmanager.local", "alerts": alerts,
            })
        )  # fmt: skip
    return bodies


class Counts:
    """(alert rows, unprocessed rows) of the daemon's inbox, read from its store (SQLite file or PostgreSQL)."""

    def __init__(self, daemon: DaemonProcess, pg: Any) -> None:
        self.daemon, self.pg = daemon, pg

    def __call__(self) -> tuple[int, int]:
        if self.pg is None:
            return inbox_counts(self.daemon.db)
        out = self.pg.psql(
            "SELECT count(*) FILTER (WHERE kind = 'alert'), count(*) FILTER (WHERE processed_at IS NULL) FROM inbox"
        )
        total, pending = out.strip().split("|")
        return int(total), int(pending)


def post_all(client: httpx.Client, url: str, bodies: list[bytes], headers: dict[str, str]) -> tuple[float, int, int]:
    """Post every body; (seconds, 503 retries, accepted). A 503 is retried after a short pause."""
    retries = accepted = 0
    start = time.perf_counter()
    for body in bodies:
        while True:
            resp = client.post(url, content=body, headers=headers)
            if resp.status_code == 503:
                retries += 1
                time.sleep(0.05)
                continue
            if resp.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
            if resp.content:
                data = resp.json()
                accepted += int(data.get("accepted", 0)) if isinstance(data, dict) else 0
            break
    return time.perf_counter() - start, retries, accepted


def wait_drained(counts: Counts, timeout: float = 600.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if counts()[1] == 0:
            return time.perf_counter() - start
        time.sleep(0.02 if counts.pg is None else 0.1)
    raise RuntimeError(f"inbox not drained after {timeout}s")


def ceiling(bodies: list[bytes]) -> float:
    start = time.perf_counter()
    n = 0
    for body in bodies:
        n += len(orjson.loads(body)["alerts"])
    return n / (time.perf_counter() - start)


def start_daemon(workdir: Path, variant: str, store: str) -> tuple[DaemonProcess, Any]:
    """``rollbackd run`` with the variant's rules, on SQLite or a throwaway PostgreSQL (returned to stop)."""
    from tests.stack.postgres import Postgres  # noqa: PLC0415 - the stack is a test utility

    extra: dict[str, Any] = {}
    pg = Postgres(workdir / "pg") if store == "postgres" else None
    if pg is not None:
        extra["store"] = {"url": pg.start()["dsn"]}
    kwargs: dict[str, Any] = {}
    if variant == "join":
        (workdir / "join.yaml").write_text(JOIN_RULES)
        kwargs["rules"] = [workdir / "join.yaml"]
    try:
        daemon = DaemonProcess(workdir / "rollbackd", extra=extra, **kwargs).start()
    except BaseException:
        if pg is not None:
            pg.stop()
        raise
    return daemon, pg


def run(runs: int, batches: int, workdir: Path, variant: str = "miss", store: str = "sqlite") -> dict[str, Any]:
    from tests.stack.prometheus import Alertmanager  # noqa: PLC0415 - the stack is a test utility

    daemon, pg = start_daemon(workdir, variant, store)
    counts = Counts(daemon, pg)
    am = Alertmanager(workdir / "alertmanager")
    am.start()
    rb_rates: list[float] = []
    rb_processed: list[float] = []
    am_rates: list[float] = []
    ceil_rates: list[float] = []
    retries_total = 0
    expected_rows = 0
    try:
        auth = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
        plain = {"Content-Type": "application/json"}
        with httpx.Client(timeout=60) as client:
            # Warm-up: imports, connection, SQLite pages, Alertmanager's first allocation.
            # In the join variant the warm-up opens the 200 incidents every later alert joins.
            warm = make_bodies(3 if variant == "miss" else JOIN_TARGETS // BATCH, variant)
            post_all(client, f"{daemon.url}/webhooks/alertmanager", warm, auth)
            post_all(client, f"{am.url}/api/v2/alerts", [to_v2_postable(b) for b in warm], plain)
            expected_rows += len(warm) * BATCH
            wait_drained(counts)
            for _ in range(runs):
                bodies = make_bodies(batches, variant)
                n = batches * BATCH
                took, retries, accepted = post_all(client, f"{daemon.url}/webhooks/alertmanager", bodies, auth)
                if accepted != n:
                    raise RuntimeError(f"rollbackd accepted {accepted} of {n} distinct alerts")
                rb_rates.append(n / took)
                drained = wait_drained(counts)
                rb_processed.append(n / (took + drained))
                retries_total += retries
                expected_rows += n
                v2 = [to_v2_postable(b) for b in bodies]
                took, _, _ = post_all(client, f"{am.url}/api/v2/alerts", v2, plain)
                am_rates.append(n / took)
                ceil_rates.append(ceiling(bodies))
        rows, pending = counts()
    finally:
        daemon.stop()
        am.stop()
        if pg is not None:
            pg.stop()
    if rows != expected_rows:
        raise RuntimeError(f"inbox holds {rows} alert rows, expected {expected_rows}: an accepted alert was lost")
    rb, am_m, ce = median(rb_rates), median(am_rates), median(ceil_rates)
    return {
        "benchmark": "ingest",
        "variant": variant,
        "store": store,
        "unit": "alerts/s",
        "batch": BATCH,
        "alerts_per_run": batches * BATCH,
        "runs": runs,
        "rollbackd_accepted_durable": summary(rb_rates),
        "rollbackd_processed_end_to_end": summary(rb_processed),
        "alertmanager_v2": summary(am_rates),
        "orjson_ceiling": summary(ceil_rates),
        "ratio_vs_alertmanager": ratio(rb, am_m),
        "processed_ratio_vs_alertmanager": ratio(median(rb_processed), am_m),
        "ratio_vs_ceiling": ratio(rb, ce),
        "target_ratio_vs_alertmanager": 1.0,
        "met": rb >= am_m,
        "inbox_rows_checked": rows,
        "inbox_pending_after": pending,
        "retries_503": retries_total,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30, help="batches of 100 alerts per run")
    parser.add_argument("--variant", choices=["miss", "join"], default="miss", help="join: alerts join 200 incidents")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        result = run(args.runs, args.batches, Path(tmp), args.variant, args.store)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
