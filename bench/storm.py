"""Alert storm: 50,000 distinct alerts from 8 concurrent senders; time until every one is decided.

``rollbackd run`` in its own process (shipped rules; SQLite, or PostgreSQL
with ``--store postgres``; ``--variant join`` for alerts that all match a
decision rule and join 200 incidents, as in bench/ingest.py). Eight threads,
each with its own keep-alive client, post their share in webhooks of 100 as
fast as the daemon answers. A 503 is the daemon's back-pressure (its queue is
full): the sender retries it after a pause, as Alertmanager does; it is
counted apart. Any other status ≥ 500 is a failure. Reported: the time until
the last 2xx, the time until the inbox is drained (every alert decided), and
the inbox's row count, which must equal the alerts sent (nothing lost).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.ingest import BATCH, Counts, make_bodies, start_daemon, wait_drained
from tests.daemon_process import INGEST_TOKEN

SENDERS = 8


def send(url: str, bodies: list[bytes], statuses: Counter[int], lock: threading.Lock) -> None:
    auth = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(timeout=120) as client:
        for body in bodies:
            while True:
                code = client.post(url, content=body, headers=auth).status_code
                with lock:
                    statuses[code] += 1
                if code in (429, 503):
                    time.sleep(0.05)
                    continue
                break


def run(alerts: int, variant: str, store: str, workdir: Path) -> dict[str, Any]:
    daemon, pg = start_daemon(workdir, variant, store)
    counts = Counts(daemon, pg)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    try:
        warm = make_bodies(2, variant)  # the join variant's 200 incidents, opened before the storm
        send(f"{daemon.url}/webhooks/alertmanager", warm, statuses, lock)
        wait_drained(counts)
        statuses.clear()
        bodies = make_bodies(alerts // BATCH, variant)
        shares = [bodies[i::SENDERS] for i in range(SENDERS)]
        url = f"{daemon.url}/webhooks/alertmanager"
        threads = [threading.Thread(target=send, args=(url, share, statuses, lock)) for share in shares]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted_s = time.perf_counter() - start
        drained_s = accepted_s + wait_drained(counts, timeout=1800)
        rows, pending = counts()
    finally:
        daemon.stop()
        if pg is not None:
            pg.stop()
    sent = len(bodies) * BATCH
    failures = sum(n for code, n in statuses.items() if code >= 500 and code != 503)
    lost = (len(warm) * BATCH + sent) - rows
    return {
        "benchmark": "storm",
        "variant": variant,
        "store": store,
        "alerts": sent,
        "senders": SENDERS,
        "seconds_until_all_accepted": round(accepted_s, 2),
        "seconds_until_all_decided": round(drained_s, 2),
        "decided_per_s": round(sent / drained_s, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "retried_503": statuses.get(503, 0),
        "failures_5xx": failures,
        "lost_alerts": lost,
        "inbox_pending_after": pending,
        "met": failures == 0 and lost == 0 and pending == 0,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--variant", choices=["miss", "join"], default="miss")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        result = run(args.alerts, args.variant, args.store, Path(tmp))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
