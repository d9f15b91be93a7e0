"""``python -m tests.stack up|down|status``: the test stack for a person, outside pytest.

``up`` starts Kafka, the Kubernetes control plane with its KWOK node,
Prometheus, Alertmanager and PostgreSQL (or only the services named, e.g.
``up kafka``) under ``.stack/`` on free loopback ports, detached, and prints
how to reach each (for Kafka also its CA and the SASL user's password file);
``down`` stops them all; ``status`` prints what ``up`` recorded. Binaries come from
``scripts/stack/install.sh``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from tests.stack.base import REPO, Proc, StackError, stop_group
from tests.stack.kafka import Kafka
from tests.stack.kube import KubeCluster
from tests.stack.postgres import Postgres
from tests.stack.prometheus import Alertmanager, Prometheus

STATE_DIR = REPO / ".stack"
STATE = STATE_DIR / "state.json"


def _procs(service: object) -> list[Proc]:
    """Every process a service object holds, wherever it keeps them."""
    return [v for v in vars(service).values() if isinstance(v, Proc)]


def up(only: Sequence[str] = ()) -> int:
    if STATE.exists():
        print(f"stack: already up (see {STATE}); run `down` first", file=sys.stderr)
        return 1
    STATE_DIR.mkdir(exist_ok=True)
    services: list[Any] = [
        Kafka(STATE_DIR / "kafka"),
        KubeCluster(STATE_DIR / "kube"),
        Prometheus(STATE_DIR / "prometheus"),
        Alertmanager(STATE_DIR / "alertmanager"),
        Postgres(STATE_DIR / "postgres"),
    ]
    if unknown := set(only) - {s.name for s in services}:
        print(f"stack: no service {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    services = [s for s in services if not only or s.name in only]
    state: dict[str, Any] = {"services": {}, "pgids": []}
    try:
        for service in services:
            (STATE_DIR / service.name).mkdir(parents=True, exist_ok=True)
            endpoints = service.start()
            state["services"][service.name] = endpoints
            state["pgids"].extend(p.pid for p in _procs(service))
            print(f"{service.name:13} {json.dumps(endpoints)}")
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        for pgid in state["pgids"]:
            stop_group(pgid)
        return 1
    STATE.write_text(json.dumps(state, indent=2))
    print(f"stack: up; `python -m tests.stack down` stops it ({STATE})")
    return 0


def down() -> int:
    if not STATE.exists():
        print("stack: not up")
        return 0
    state = json.loads(STATE.read_text())
    for pgid in reversed(state["pgids"]):
        stop_group(int(pgid))
    STATE.unlink()
    print("stack: down")
    return 0


def status() -> int:
    if not STATE.exists():
        print("stack: not up")
        return 1
    state = json.loads(STATE.read_text())
    alive = []
    for pgid in state["pgids"]:
        try:
            os.killpg(int(pgid), 0)
            alive.append(pgid)
        except ProcessLookupError:
            pass
    for name, endpoints in state["services"].items():
        print(f"{name:13} {json.dumps(endpoints)}")
    print(f"stack: {len(alive)} of {len(state['pgids'])} processes running")
    return 0 if len(alive) == len(state["pgids"]) else 1


if __name__ == "__main__":
    commands = {"down": down, "status": status}
    if len(sys.argv) >= 2 and sys.argv[1] == "up":
        sys.exit(up(sys.argv[2:]))
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print("usage: python -m tests.stack up [SERVICE...]|down|status", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
