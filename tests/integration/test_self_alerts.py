"""The self-alerts shipped in deploy/base/rollbackd-alerts.yaml fire on the metrics the daemon exports.

Evaluated by promtool's rule unit tests (``promtool test rules``) on series
named and labelled as ``daemon.metrics`` exports them, scraped per pod.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

BASE = Path(__file__).resolve().parents[2] / "deploy" / "base"


def test_self_alerts_fire_on_a_dead_or_restarting_kafka_consumer(tmp_path: Path) -> None:
    """promtool's rule tests: the shipped alerts fire on the consumer metrics as the daemon exports them."""
    spec = yaml.safe_load((BASE / "rollbackd-alerts.yaml").read_text())["spec"]
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(spec))
    up = 'rollbackd_kafka_consumer_up{pod="rollbackd-0", consumer="kafka-deploy-consumer"}'
    restarts = 'rollbackd_kafka_consumer_restarts_total{pod="rollbackd-1", consumer="kafka-deploy-consumer"}'
    labels = {"consumer": "kafka-deploy-consumer"}
    tests = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                # rollbackd-0's consumer stops fetching at minute 3; rollbackd-1's restarts 5 times in 5 minutes.
                "input_series": [
                    {"series": up, "values": "1 1 1 0x10"},
                    {"series": restarts, "values": "0 1 2 3 4 5 5x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "RollbackdKafkaConsumerDown", "exp_alerts": []},
                    {
                        "eval_time": "9m",
                        "alertname": "RollbackdKafkaConsumerDown",
                        "exp_alerts": [
                            {"exp_labels": {**labels, "pod": "rollbackd-0", "severity": "critical"},
                             "exp_annotations": _annotations(spec, "RollbackdKafkaConsumerDown", "rollbackd-0")}
                        ],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "RollbackdKafkaConsumerRestarting",
                        "exp_alerts": [
                            {"exp_labels": {**labels, "pod": "rollbackd-1", "severity": "warning"},
                             "exp_annotations": _annotations(spec, "RollbackdKafkaConsumerRestarting", "rollbackd-1")}
                        ],
                    },
                ],
            }
        ],
    }  # fmt: skip
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run(
        ["promtool", "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _annotations(spec: dict[str, Any], alert: str, pod: str) -> dict[str, str]:
    """The alert's annotations as Alertmanager would see them for ``pod`` (the two templates used)."""
    rule = next(r for g in spec["groups"] for r in g["rules"] if r.get("alert") == alert)
    return {
        k: v.replace("{{ $labels.consumer }}", "kafka-deploy-consumer").replace("{{ $labels.pod }}", pod)
        for k, v in rule["annotations"].items()
    }
