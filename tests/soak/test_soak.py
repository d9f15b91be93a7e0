"""Soak: a steady alert rate for a bounded time; the daemon's RSS and open fds stay flat.

``rollbackd run`` (real process, SQLite, shipped rules) receives Alertmanager
webhooks at a steady rate — new alerts, redeliveries of recent ones and
resolutions, as a real Alertmanager sends — for ``ROLLBACKD_SOAK_S`` seconds
(600 by default). RSS (VmRSS) and the number of open file descriptors of the
daemon are sampled every few seconds. After a warm-up (the first 20%), the
median of the last 20% of samples must be within 5% of the median of the
samples from 20% to 40%. Every batch must be accepted (200) and the inbox
must keep up (nothing pending at the end).

Runs only with ``pytest --soak``; its timeout follows ``ROLLBACKD_SOAK_S``.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from tests.daemon_process import INGEST_TOKEN, DaemonProcess, open_fds, rss_mb
from tests.inbox_util import inbox_counts
from tests.webhooks import webhook_body

pytestmark = pytest.mark.soak

DURATION_S = float(os.environ.get("ROLLBACKD_SOAK_S", "600"))
ALERTS_PER_S = int(os.environ.get("ROLLBACKD_SOAK_RATE", "50"))
BATCH = 10
SAMPLE_EVERY_S = max(1.0, DURATION_S / 120)


def _resolved(body: bytes) -> bytes:
    message = orjson.loads(body)
    message["status"] = "resolved"
    for alert in message["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps(message)


def _flat(samples: list[float]) -> tuple[float, float]:
    n = len(samples)
    baseline = statistics.median(samples[n * 20 // 100 : max(n * 40 // 100, n * 20 // 100 + 1)])
    final = statistics.median(samples[n * 80 // 100 :])
    return baseline, final


# Its own timeout, not the suite's 600 s: the run, the drain (120 s) and start/stop, so an hour's soak
# (ROLLBACKD_SOAK_S=3600 ROLLBACKD_SOAK_RATE=1000) is not killed at ten minutes.
@pytest.mark.timeout(DURATION_S + 300)
def test_rss_and_fds_stay_flat_under_a_steady_alert_rate(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "rollbackd").start()
    assert daemon.popen is not None
    pid = daemon.popen.pid
    rss: list[float] = []
    fds: list[float] = []
    sent = 0
    interval = BATCH / ALERTS_PER_S
    try:
        with httpx.Client(
            base_url=daemon.url,
            timeout=30,
            headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
        ) as c:
            start = time.monotonic()
            next_sample = start
            recent: list[bytes] = []
            tick = 0
            while (now := time.monotonic()) - start < DURATION_S:
                body = webhook_body("soak", sent, BATCH, datetime.now(UTC))
                resp = c.post("/webhooks/alertmanager", content=body)
                assert resp.status_code == 200, resp.text
                sent += BATCH
                recent.append(body)
                if tick % 5 == 0 and len(recent) > 3:  # Alertmanager resends, then the alert resolves
                    assert c.post("/webhooks/alertmanager", content=recent[-3]).status_code == 200
                    assert c.post("/webhooks/alertmanager", content=_resolved(recent.pop(0))).status_code == 200
                    recent = recent[-10:]
                tick += 1
                if now >= next_sample:
                    rss.append(rss_mb(pid))
                    fds.append(open_fds(pid))
                    next_sample += SAMPLE_EVERY_S
                time.sleep(max(0.0, start + tick * interval - time.monotonic()))
        drain_deadline = time.monotonic() + 120
        while inbox_counts(daemon.db)[1] and time.monotonic() < drain_deadline:
            time.sleep(0.5)
        pending = inbox_counts(daemon.db)[1]
    finally:
        daemon.stop()
    rss_base, rss_end = _flat(rss)
    fd_base, fd_end = _flat(fds)
    print(
        f"\nsoak {DURATION_S:.0f}s, {sent} alerts: RSS {rss_base:.1f} -> {rss_end:.1f} MiB, fds {fd_base} -> {fd_end}"
    )
    assert pending == 0, f"{pending} inbox rows still pending: the dispatcher did not keep up"
    assert rss_end <= rss_base * 1.05, f"RSS grew {rss_end / rss_base - 1:.1%}: {rss_base:.1f} -> {rss_end:.1f} MiB"
    assert fd_end <= fd_base * 1.05, f"open fds grew: {fd_base} -> {fd_end}"
