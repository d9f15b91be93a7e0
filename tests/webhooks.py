"""Alertmanager webhook bodies (version 4) for the tests that post to a real ``rollbackd run`` and the benchmarks.

- ``probe_webhook``: one ``LatencyProbe`` alert naming a Deployment, which
  ``tests/fixtures/rules/rollback-now.yaml`` rolls back at once;
- ``webhook_body``: a batch of distinct ``BenchHighErrorRate`` alerts (ingest load);
- ``firing_alert`` and ``webhook_bodies``: distinct alerts of any name, shuffled into webhooks.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime

import orjson


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def probe_webhook(ns: str, name: str) -> bytes:
    """A webhook with one firing ``LatencyProbe`` alert on Deployment ``ns/name``; a new fingerprint each call."""
    labels = {"alertname": "LatencyProbe", "namespace": ns, "deployment": name, "severity": "page"}
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": f"latency:{name}",
            "status": "firing",
            "receiver": "rollbackd",
            "groupLabels": {},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "http://am",
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {"value": "0.3"},
                    "startsAt": iso(datetime.now(UTC)),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": uuid.uuid4().hex[:16],
                }
            ],
        }
    )


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
