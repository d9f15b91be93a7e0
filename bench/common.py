"""Shared plumbing of the benchmarks: medians and ratios, quiet logs, alerts in Prometheus' postable form.

The benchmarks measure the daemon from the outside, the way Alertmanager or a
user would reach it: ``rollbackd run --config FILE`` in its own process
(``tests.daemon_process.DaemonProcess``, shared with the fault tests), talked
to over loopback HTTP with the tests' alert bodies (``tests.webhooks``). Every
figure is compared with a baseline measured in the same run, so a loaded
machine slows both sides alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import orjson


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
