"""Shared plumbing of the benchmarks: medians, a rollbackd process, distinct alert bodies.

The benchmarks measure the daemon from the outside, the way Alertmanager or a
user would reach it: ``rollbackd run --config FILE`` in its own process, talked
to over loopback HTTP. Every figure is compared with a baseline measured in the
same run, so a loaded machine slows both sides alike.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RULES = [
    REPO / "rules" / "rollback-matrix.yaml",
    REPO / "rules" / "routing.yaml",
    REPO / "rules" / "thresholds.yaml",
]
INGEST_TOKEN = "bench-ingest-" + uuid.uuid4().hex
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex


def quiet() -> None:
    """Warnings and errors only: per-event info lines would measure the log sink, not the daemon."""
    from daemon.logs import configure_logging  # noqa: PLC0415

    configure_logging("warning", "json")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    return {"median": round(median(values), digits), "runs": [round(v, digits) for v in values]}


def ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size from ``/proc/<pid>/status`` (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _token(name: str, token: str, scopes: list[str]) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(), "scopes": scopes}


@dataclass
class DaemonProcess:
    """``rollbackd run`` in a child process with an SQLite store and the given rules."""

    workdir: Path
    rules: Sequence[Path] = field(default_factory=lambda: list(SHIPPED_RULES))
    kubeconfig: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    log_level: str = "warning"
    port: int = 0
    instance: str | None = None  # the replica's name in the Lease (default: $HOSTNAME, the same for all)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.workdir / "rollbackd.sqlite"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        kube: dict[str, Any] = {"kubeconfig": str(self.kubeconfig or self.workdir / "no-kubeconfig")}
        cfg: dict[str, Any] = {
            "http": {
                "host": "127.0.0.1",
                "port": self.port,
                "tokens": [_token("bench", INGEST_TOKEN, ["ingest"]), _token("admin", ADMIN_TOKEN, ["read", "admin"])],
            },
            "store": {"url": f"sqlite+aiosqlite:///{self.db}"},
            "rules": {"paths": [str(p) for p in self.rules], "watch": False},
            "kubernetes": kube,
            "logging": {"level": self.log_level, "format": "json"},
        }
        for group, values in self.extra.items():
            cfg.setdefault(group, {}).update(values)
        if self.instance:
            cfg["instance"] = self.instance
        return cfg

    def start(self, timeout: float = 60.0) -> DaemonProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.workdir / "rollbackd.yaml"
        config.write_text(yaml.safe_dump(self.config()))
        log = (self.workdir / "rollbackd.log").open("ab")
        argv = [sys.executable, str(REPO / "bench" / "daemon_main.py"), "run", "--config", str(config)]
        if os.environ.get("BENCH_PROFILE"):
            # cProfile of the daemon's event loop thread, written when it stops on SIGTERM.
            argv[1:1] = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
        self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"rollbackd exited {self.popen.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rollbackd not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "rollbackd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the daemon process alone (SIGSTOP/SIGCONT: a paused replica)."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the crash the durability promises are about."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_labels(run: str, i: int) -> dict[str, str]:
    """Labels of one distinct alert; ``run`` keeps every run's alerts new to the receiver."""
    return {
        "alertname": "BenchHighErrorRate",
        "severity": "warning",
        "namespace": f"bench-{i % 20}",
        "deployment": f"web-{i % 50}",
        "instance": f"10.0.{(i // 250) % 250}.{i % 250}:8080",
        "run": run,
        "seq": str(i),
    }


def webhook_body(run: str, start: int, count: int, now: datetime) -> bytes:
    """An Alertmanager webhook (version 4) carrying ``count`` distinct firing alerts."""
    alerts = []
    for i in range(start, start + count):
        labels = alert_labels(run, i)
        alerts.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": f"error ratio above 5% on {labels['deployment']}", "value": "0.12"},
                "startsAt": iso(now),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.local/graph?g0.expr=up",
                "fingerprint": hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16],
            }
        )
    message = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="BenchHighErrorRate",run="{run}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {"alertname": "BenchHighErrorRate"},
        "commonLabels": {"alertname": "BenchHighErrorRate", "run": run},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": alerts,
    }
    return orjson.dumps(message)


def to_v2_postable(webhook: bytes) -> bytes:
    """The same alerts in Alertmanager's ``/api/v2/alerts`` postable form (what Prometheus sends)."""
    message = orjson.loads(webhook)
    return orjson.dumps(
        [
            {
                "labels": a["labels"],
                "annotations": a["annotations"],
                "startsAt": a["startsAt"],
                "generatorURL": a["generatorURL"],
            }
            for a in message["alerts"]
        ]
    )
