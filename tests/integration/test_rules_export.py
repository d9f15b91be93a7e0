"""Threshold rules exported to the real Prometheus: promtool accepts them, Prometheus loads and fires them.

The alert Prometheus raises carries ``alertname`` = the threshold rule's name and
``rollbackd_rule``, so the decision rules map it back; a reload with a broken file
keeps that decision working.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from daemon.clock import FakeClock
from daemon.deploys import DeployHistory
from daemon.model import ActionKind, Alert, AlertStatus, Target
from daemon.rules import RuleRegistry, load_ruleset
from daemon.rules.export import export
from daemon.target import target_from_labels
from tests.fixtures import rules_file, rules_text
from tests.stack.exporter import Exporter
from tests.stack.prometheus import Prometheus, promtool_check_rules

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "rules"
TIMEOUT = 90.0


def _wait(what: str, check: Any, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.parametrize("fmt", ["prometheus", "prometheusrule"])
def test_shipped_export_passes_promtool_and_loads_into_prometheus(
    tmp_path: Path, prometheus: Prometheus, fmt: str
) -> None:
    ruleset, errors, _ = load_ruleset([SHIPPED])
    assert ruleset is not None, errors
    text = export(ruleset, "prometheus")
    path = tmp_path / "thresholds.rules.yml"
    path.write_text(text)
    checked = promtool_check_rules(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 16 rules found" in checked.stdout
    if fmt == "prometheusrule":
        # The manifest's spec is the same rule-group document; Prometheus itself loads the plain form.
        manifest = yaml.safe_load(export(ruleset, "prometheusrule", namespace="monitoring"))
        assert manifest["spec"] == yaml.safe_load(text)
        return
    prometheus.configure(scrape_targets=[], rules=text, alertmanagers=[])
    expected = {s.name for s in ruleset.threshold_specs}
    _wait("the exported rules to load", lambda: prometheus.rule_names() >= expected)
    assert {"ApplicationErrorRate", "SecuritySuspiciousActivity", "ServiceDown"} <= prometheus.rule_names()


def test_prometheus_alert_maps_back_to_its_rule_and_survives_a_broken_reload(
    tmp_path: Path, prometheus: Prometheus, exporter: Exporter
) -> None:
    name = f"ItServiceDown{uuid.uuid4().hex[:8]}"
    rules = rules_file("export-service-down", tmp_path, name=name)
    registry = RuleRegistry([rules], FakeClock())
    ruleset = registry.load()

    labels = {"namespace": "prod", "deployment": "web"}
    exporter.set("rollbackd_it_replicas_available", 0, labels=labels)
    prometheus.configure(scrape_targets=[exporter.address], rules=export(ruleset), alertmanagers=[])
    firing = _wait(
        "Prometheus to fire the exported rule",
        lambda: [a for a in prometheus.alerts() if a["labels"].get("alertname") == name and a["state"] == "firing"],
    )[0]
    assert firing["labels"]["rollbackd_rule"] == name
    assert firing["labels"]["severity"] == "P0"
    assert float(firing["annotations"]["value"]) == 0

    alert = Alert(
        name=firing["labels"]["alertname"],
        status=AlertStatus.FIRING,
        labels=MappingProxyType(firing["labels"]),
        annotations=MappingProxyType(firing["annotations"]),
        starts_at=datetime.fromisoformat(firing["activeAt"].replace("Z", "+00:00")).astimezone(UTC),
        fingerprint="it",
        source="prometheus",
        target=target_from_labels(firing["labels"]),
        value=float(firing["annotations"]["value"]),
    )
    [before] = registry.current.evaluate(alert, DeployHistory())
    assert (before.rule, before.action, before.targets) == (
        "it-service-down",
        ActionKind.ROLLBACK_NOW,
        (Target("prod", "web"),),
    )

    broken = rules_text("export-service-down", name=name).replace("action: rollback_now", "action: roll_back_please")
    rules.write_text(broken)
    result = registry.reload()
    assert not result.ok
    assert f"{rules}:" in result.errors[0]
    assert "decisions[0].action" in result.errors[0]
    [after] = registry.current.evaluate(alert, DeployHistory())
    assert after == before
