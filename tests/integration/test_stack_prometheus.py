"""The real Prometheus → Alertmanager → webhook chain the daemon sits behind.

Prometheus scrapes the test exporter every second and evaluates
``http_error_ratio > 0.05`` with ``for: 2s``. One test follows the alert
through Alertmanager to a webhook (payload version 4, Bearer header) and
prints how long a breach takes to arrive; the other has Prometheus post
straight to a receiver's ``<path_prefix>/api/v2/alerts``, as it will post to
rollbackd.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.stack.exporter import Exporter
from tests.stack.prometheus import Alertmanager, AlertmanagerTarget, Prometheus, promtool_check_rules
from tests.stack.webhook_sink import Recorded, WebhookSink

pytestmark = pytest.mark.integration

LABELS = {"namespace": "default", "deployment": "web"}
SETUP_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 60.0


def _rules(alertname: str, instance: str = "127.0.0.1:1") -> str:
    # Bound to this test's exporter: other tests' series may still be in the shared Prometheus.
    return f"""\
groups:
  - name: stack-test
    rules:
      - alert: {alertname}
        expr: http_error_ratio{{instance="{instance}"}} > 0.05
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "error ratio of {{{{ $labels.deployment }}}} is {{{{ $value }}}}"
"""


def _wait(what: str, check: Callable[[], object], timeout: float = SETUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def _arm(prometheus: Prometheus, exporter: Exporter, alertname: str, targets: list[AlertmanagerTarget]) -> None:
    """Load the rule, scrape the exporter at a healthy value, and wait until Prometheus sees both."""
    exporter.set("http_error_ratio", 0.0, labels=LABELS)
    prometheus.configure(
        scrape_targets=[exporter.address], rules=_rules(alertname, exporter.address), alertmanagers=targets
    )
    _wait("the rule to load", lambda: alertname in prometheus.rule_names() or sorted(prometheus.rule_names()))

    def scraped() -> object:
        series = prometheus.query(f'http_error_ratio{{instance="{exporter.address}"}}')
        return [float(s["value"][1]) for s in series] == [0.0] or series

    _wait("the exporter to be scraped", scraped)
    # a scrape after the rule loaded, so the first evaluation after the breach sees the new value promptly
    exporter.wait_scraped(timeout=SETUP_TIMEOUT)


def _alert_named(alertname: str, status: str) -> Any:
    def match(r: Recorded) -> bool:
        body = r.json
        return (
            r.method == "POST"
            and body["status"] == status
            and any(a["labels"]["alertname"] == alertname and a["status"] == status for a in body["alerts"])
        )

    return match


def test_rule_file_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(_rules("StackRuleCheck"))
    result = promtool_check_rules(rules)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(_rules("StackRuleCheck").replace("> 0.05", ">"))
    assert promtool_check_rules(bad).returncode != 0


def test_breach_reaches_webhook_through_alertmanager(
    prometheus: Prometheus, alertmanager: Alertmanager, exporter: Exporter, webhook_sink: WebhookSink
) -> None:
    alertname = f"StackHighErrorRatio_{uuid.uuid4().hex[:8]}"
    token = "stack-test-token"
    alertmanager.configure(webhook_url=f"{webhook_sink.url}/hook", bearer_token=token)
    try:
        _arm(prometheus, exporter, alertname, [AlertmanagerTarget(alertmanager.address)])

        breach = time.monotonic()
        exporter.set("http_error_ratio", 0.2, labels=LABELS)
        firing = webhook_sink.wait_for(_alert_named(alertname, "firing"), timeout=DELIVERY_TIMEOUT)
        fired_after = firing.received_at - breach
        print(f"\nbreach -> firing webhook via Alertmanager: {fired_after:.2f}s")

        body = firing.json
        assert firing.path == "/hook"
        assert firing.header("Authorization") == f"Bearer {token}"
        assert body["version"] == "4"
        assert body["status"] == "firing"
        assert body["receiver"] == "webhook"
        assert body["groupLabels"] == {"alertname": alertname}
        assert body["externalURL"].rstrip("/") == alertmanager.url
        alert = next(a for a in body["alerts"] if a["labels"]["alertname"] == alertname)
        assert alert["labels"] == {
            "alertname": alertname,
            "severity": "page",
            "job": "stack",
            "instance": exporter.address,
            **LABELS,
        }
        assert alert["annotations"]["summary"] == "error ratio of web is 0.2"
        assert alert["fingerprint"]
        assert fired_after >= 2.0, "fired before the rule's for: 2s elapsed"

        healed = time.monotonic()
        exporter.set("http_error_ratio", 0.01, labels=LABELS)
        resolved = webhook_sink.wait_for(_alert_named(alertname, "resolved"), timeout=DELIVERY_TIMEOUT)
        print(f"heal -> resolved webhook via Alertmanager: {resolved.received_at - healed:.2f}s")
        assert resolved.header("Authorization") == f"Bearer {token}"
    finally:
        prometheus.reset()


def test_prometheus_posts_alerts_straight_to_a_receiver(
    prometheus: Prometheus, exporter: Exporter, webhook_sink: WebhookSink
) -> None:
    alertname = f"StackDirect_{uuid.uuid4().hex[:8]}"
    token = "direct-token"
    target = AlertmanagerTarget(webhook_sink.address, path_prefix="/rollbackd", bearer_token=token)
    try:
        _arm(prometheus, exporter, alertname, [target])

        breach = time.monotonic()
        exporter.set("http_error_ratio", 0.3, labels=LABELS)

        def carries_alert(r: Recorded) -> bool:
            return r.path == "/rollbackd/api/v2/alerts" and any(a["labels"]["alertname"] == alertname for a in r.json)

        hit = webhook_sink.wait_for(carries_alert, timeout=DELIVERY_TIMEOUT)
        print(f"\nbreach -> POST /api/v2/alerts straight from Prometheus: {hit.received_at - breach:.2f}s")

        assert hit.method == "POST"
        assert hit.header("Authorization") == f"Bearer {token}"
        assert (hit.header("Content-Type") or "").startswith("application/json")
        assert isinstance(hit.json, list)
        assert 1 <= len(hit.json) <= 64
        alert = next(a for a in hit.json if a["labels"]["alertname"] == alertname)
        assert alert["labels"]["deployment"] == "web"
        assert alert["labels"]["namespace"] == "default"
        assert alert["labels"]["severity"] == "page"
        assert alert["annotations"]["summary"] == "error ratio of web is 0.3"
        assert alert["generatorURL"].startswith(prometheus.url)
        starts = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
        ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
        received = datetime.fromtimestamp(hit.received_wall, tz=UTC)
        assert starts <= received < ends, "a firing alert carries an endsAt in the future"
    finally:
        prometheus.reset()
