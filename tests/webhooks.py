"""Alertmanager webhook bodies for the fault tests: distinct firing alerts, shuffled into webhooks."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

import orjson

from bench.common import iso


def firing_alert(name: str, namespace: str, deployment: str, seq: int, run: str) -> dict[str, object]:
    """One distinct firing alert as Alertmanager posts it; ``seq`` and ``run`` make it new."""
    labels = {
        "alertname": name, "namespace": namespace, "deployment": deployment, "instance": f"pod-{seq}", "run": run,
    }  # fmt: skip
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"{name} on {deployment}"},
        "startsAt": iso(datetime.now(UTC)),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph",
        "fingerprint": hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16],
    }


def webhook_bodies(alerts: list[dict[str, object]], rng: random.Random, per_webhook: int = 5) -> list[bytes]:
    """The alerts shuffled into Alertmanager webhooks (version 4) of ``per_webhook`` alerts each."""
    shuffled = alerts[:]
    rng.shuffle(shuffled)
    bodies = []
    for start in range(0, len(shuffled), per_webhook):
        chunk = shuffled[start : start + per_webhook]
        bodies.append(
            orjson.dumps(
                {
                    "version": "4", "groupKey": f"{{}}:{{run=\"{start}\"}}", "truncatedAlerts": 0,
                    "status": "firing", "receiver": "rollbackd", "groupLabels": {}, "commonLabels": {},
                    "commonAnnotations": {}, "externalURL": "http://alertmanager.local", "alerts": chunk,
                }
            )
        )  # fmt: skip
    return bodies
