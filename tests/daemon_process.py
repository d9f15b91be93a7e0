"""``rollbackd run`` in a child process, the way production runs it: for fault, soak and fuzz tests and the benchmarks.

The child is ``bench/daemon_main.py`` (a plain script, so ``BENCH_PROFILE`` can
put it under cProfile). A script's own folder, not the working directory, goes
first on ``sys.path``, so the child imports the installed ``daemon`` package
and inherits this process' environment: to run an old commit's daemon from
its worktree, point ``PYTHONPATH`` at that worktree.

Every child accepts ``INGEST_TOKEN`` (scope ``ingest``) and ``ADMIN_TOKEN``
(``read``, ``admin``); both are new for each test process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.stack.base import REPO

SHIPPED_RULES = [
    REPO / "rules" / "rollback-matrix.yaml",
    REPO / "rules" / "routing.yaml",
    REPO / "rules" / "thresholds.yaml",
]
INGEST_TOKEN = "test-ingest-" + uuid.uuid4().hex
ADMIN_TOKEN = "test-admin-" + uuid.uuid4().hex


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


def token_config(name: str, token: str, scopes: list[str]) -> dict[str, Any]:
    """One ``http.tokens`` entry: the token by its SHA-256, as the configuration holds it."""
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
                "tokens": [
                    token_config("bench", INGEST_TOKEN, ["ingest"]),
                    token_config("admin", ADMIN_TOKEN, ["read", "admin"]),
                ],
            },
            "store": {"url": f"sqlite+aiosqlite:///{self.db}"},
            "rules": {"paths": [str(p) for p in self.rules], "watch": False},
            "kubernetes": kube,
            "logging": {"level": self.log_level, "format": "json"},
        }
        for group, values in self.extra.items():
            if isinstance(values, dict):
                cfg.setdefault(group, {}).update(values)
            else:  # a top-level list or value: approvers, instance
                cfg[group] = values
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
