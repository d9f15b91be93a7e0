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
from tests.webhooks import webhook_body

BATCH = 100


def make_bodies(batches: int) -> list[bytes]:
    run = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    return [webhook_body(run, b * BATCH, BATCH, now) for b in range(batches)]


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


def wait_drained(db: Path, timeout: float = 300.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if inbox_counts(db)[1] == 0:
            return time.perf_counter() - start
        time.sleep(0.02)
    raise RuntimeError(f"inbox not drained after {timeout}s")


def ceiling(bodies: list[bytes]) -> float:
    start = time.perf_counter()
    n = 0
    for body in bodies:
        n += len(orjson.loads(body)["alerts"])
    return n / (time.perf_counter() - start)


def run(runs: int, batches: int, workdir: Path) -> dict[str, Any]:
    from tests.stack.prometheus import Alertmanager  # noqa: PLC0415 - the stack is a test utility

    daemon = DaemonProcess(workdir / "rollbackd").start()
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
            warm = make_bodies(3)
            post_all(client, f"{daemon.url}/webhooks/alertmanager", warm, auth)
            post_all(client, f"{am.url}/api/v2/alerts", [to_v2_postable(b) for b in warm], plain)
            expected_rows += 3 * BATCH
            wait_drained(daemon.db)
            for _ in range(runs):
                bodies = make_bodies(batches)
                n = batches * BATCH
                took, retries, accepted = post_all(client, f"{daemon.url}/webhooks/alertmanager", bodies, auth)
                if accepted != n:
                    raise RuntimeError(f"rollbackd accepted {accepted} of {n} distinct alerts")
                rb_rates.append(n / took)
                drained = wait_drained(daemon.db)
                rb_processed.append(n / (took + drained))
                retries_total += retries
                expected_rows += n
                v2 = [to_v2_postable(b) for b in bodies]
                took, _, _ = post_all(client, f"{am.url}/api/v2/alerts", v2, plain)
                am_rates.append(n / took)
                ceil_rates.append(ceiling(bodies))
        rows, pending = inbox_counts(daemon.db)
    finally:
        daemon.stop()
        am.stop()
    if rows != expected_rows:
        raise RuntimeError(f"inbox holds {rows} alert rows, expected {expected_rows}: an accepted alert was lost")
    rb, am_m, ce = median(rb_rates), median(am_rates), median(ceil_rates)
    return {
        "benchmark": "ingest",
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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        result = run(args.runs, args.batches, Path(tmp))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
