"""A responder's command loads only what it needs: the daemon's wiring stays unimported.

``rollbackd ack`` used to import every command module first, ``replay``'s among
them, and with it Kubernetes, SQLAlchemy and CEL: two seconds before the
command started. Checked in a fresh interpreter, by the modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("daemon.wiring", "daemon.app", "kubernetes_asyncio", "sqlalchemy", "celpy")

PROBE = """
import json, sys
from daemon.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
roots = {"daemon", "kubernetes_asyncio", "sqlalchemy", "celpy", "httpx", "rich", "pydantic", "pydantic_settings"}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in roots)))
"""


def _loaded(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("command", [["ack", "--help"], ["incidents", "list", "--help"], ["status", "--help"]])
def test_responder_commands_do_not_load_the_daemon(command: list[str]) -> None:
    loaded = _loaded(*command)
    assert not {m for m in loaded if m.startswith(HEAVY)}, sorted(m for m in loaded if m.startswith(HEAVY))


# What a responder's script pays for at start-up besides the interpreter: httpx loaded rich and pygments
# for its own command line, pydantic-settings came with the configuration, the records' dataclasses are
# built at import; together they were most of ``incidents list --output json``'s time (issue 19,
# bench.incidents cli_list_1000_ms). Text output imports them when it draws.
START_UP = ("httpx", "rich", "pydantic", "daemon.config", "daemon.incidents")


@pytest.mark.parametrize("command", [["ack", "--help"], ["incidents", "list", "--help"], ["pause", "--help"]])
def test_api_commands_load_no_http_library_no_pydantic_and_no_tables(command: list[str]) -> None:
    loaded = _loaded(*command)
    assert not {m for m in loaded if m.startswith(START_UP)}, sorted(m for m in loaded if m.startswith(START_UP))


def test_every_command_is_still_listed_and_runs() -> None:
    argv = [sys.executable, "-c", "from daemon.cli import main; main()", "--help"]
    listed = subprocess.run(argv, capture_output=True, text=True, check=False)
    names = {line.split()[0] for line in listed.stdout.split("Commands:")[-1].splitlines() if line.strip()}
    assert {"ack", "approve", "reject", "rollback", "incidents", "pause", "resume", "pauses", "shadow"} <= names
    assert {"rules", "status", "replay", "run", "config", "db"} <= names
    assert "daemon.wiring" in _loaded("replay", "--help")  # the one that needs it still gets it
