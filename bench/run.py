"""Runs every benchmark, each in its own process, and prints one JSON document.

``.venv/bin/python -m bench.run`` (or ``python bench/run.py``) runs them all;
``--only ingest kafka`` picks some, ``--quick`` uses smaller sizes. Each
benchmark measures its own baseline in the same run (see bench/README.md), so
the ratios are comparable from machine to machine even when the absolute
numbers are not. A benchmark that fails is reported with its error and the
command exits 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# name → (module, full-size arguments, quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "ingest": ("bench.ingest", [], ["--runs", "3", "--batches", "10"]),
    "ingest-join": ("bench.ingest", ["--variant", "join"], ["--variant", "join", "--runs", "3", "--batches", "10"]),
    "ingest-postgres": (
        "bench.ingest",
        ["--store", "postgres"],
        ["--store", "postgres", "--runs", "3", "--batches", "10"],
    ),
    "ingest-join-postgres": (
        "bench.ingest",
        ["--variant", "join", "--store", "postgres"],
        ["--variant", "join", "--store", "postgres", "--runs", "3", "--batches", "10"],
    ),
    "incidents": ("bench.incidents", [], ["--incidents", "200", "--reads", "5", "--cli-runs", "2"]),
    "storm": ("bench.storm", [], ["--alerts", "5000"]),
    "rules": ("bench.rules_scaling", [], []),
    "kafka": ("bench.kafka", [], ["--runs", "2", "--events", "1000"]),
    "memory": ("bench.memory", [], ["--incidents", "2000"]),
    "latency": ("bench.latency", [], ["--alerts", "10"]),
    "mitigate": ("bench.mitigate", [], ["--runs", "1"]),
}


def _last_json(text: str) -> Any:
    """The JSON document a benchmark printed last (some print progress lines before it)."""
    start = text.rfind("\n{")
    start = 0 if start < 0 else start + 1
    while start >= 0:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.rfind("\n{", 0, start - 1)
            start = -1 if start < 0 else start + 1
    raise ValueError("no JSON document in the output")


def run_one(name: str, quick: bool) -> dict[str, Any]:
    module, full, small = BENCHMARKS[name]
    argv = [sys.executable, "-m", module, *(small if quick else full)]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    took = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        return {"benchmark": name, "error": proc.stderr.strip().splitlines()[-5:], "seconds": took}
    try:
        result: dict[str, Any] = _last_json(proc.stdout)
    except ValueError as exc:
        return {"benchmark": name, "error": str(exc), "seconds": took}
    result.setdefault("benchmark", name)
    result["seconds"] = took
    result["command"] = " ".join([".venv/bin/python", "-m", module, *(small if quick else full)])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    results = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run_one(name, args.quick))
    print(json.dumps({"results": results}, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
