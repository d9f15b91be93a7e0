"""Bad input at every parser: a value or a rejection with a reason, never anything else.

Each parser is fed arbitrary JSON, arbitrary bytes, and valid documents with
one to three parts broken. The contract a sender relies on: a parse either
returns values or raises the documented ``InputError`` (rule files: a list of
located ``RuleError`` instead of a rule set) whose reason and message say what
was wrong. Any other exception would be a 500 or a crashed consumer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import InputError
from daemon.rules import load_ruleset
from daemon.sources.alertmanager import parse_webhook
from daemon.sources.deploy_events import parse_deploy_event
from daemon.sources.prometheus_push import parse_alerts
from tests.fuzz.strategies import json_values, mutated

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WEBHOOK = {
    "version": "4",
    "groupKey": '{}:{alertname="X"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "rollbackd",
    "groupLabels": {"alertname": "X"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://am",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "X", "namespace": "ns", "deployment": "web"},
            "annotations": {"value": "0.3"},
            "startsAt": "2026-03-01T11:59:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom",
            "fingerprint": "abc",
        }
    ],
}
PUSH = [
    {
        "labels": {"alertname": "X", "namespace": "ns"},
        "annotations": {"value": "1"},
        "startsAt": "2026-03-01T11:59:00Z",
        "endsAt": "2026-03-01T12:10:00Z",
        "generatorURL": "http://prom",
    }
]
DEPLOY = {
    "schema_version": 1,
    "event_id": "e-1",
    "type": "succeeded",
    "service": "checkout",
    "namespace": "prod",
    "deployment": "web",
    "revision": 3,
    "image": "r/web:3",
    "version": "3.0.0",
    "commit": "abc",
    "author": "ci",
    "migration": False,
    "timestamps": {"occurred_at": "2026-03-01T11:00:00Z"},
}
RULES = {
    "apiVersion": "rollbackd/v1",
    "roles": ["Engineering Lead"],
    "channels": {"ops": {"slack": "#ops"}},
    "routing": {"P1": ["ops"]},
    "decisions": [
        {
            "name": "r",
            "match": ['alertname="X"'],
            "severity": "P1",
            "action": "rollback_now",
            "rollback_time_objective": "5m",
            "channels": ["ops"],
            "when": "value > 0.5",
        }
    ],
}


def _bodies(valid: object) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda d: json.dumps(d).encode()),
        mutated(valid).map(lambda d: json.dumps(d).encode()),
    )


def _rejected_with_reason(exc: InputError) -> None:
    assert exc.reason, "a rejection must carry a reason"
    assert str(exc).strip(), "a rejection must say what was wrong"


def test_mutations_reach_the_parsers() -> None:
    """The valid seeds parse: mutations start from something the parser accepts."""
    assert len(parse_webhook(json.dumps(WEBHOOK).encode()).alerts) == 1
    assert len(parse_alerts(json.dumps(PUSH).encode(), NOW)) == 1
    assert parse_deploy_event(json.dumps(DEPLOY).encode()).revision == 3


@FUZZ
@given(_bodies(WEBHOOK))
def test_alertmanager_webhook(body: bytes) -> None:
    try:
        batch = parse_webhook(body)
    except InputError as exc:
        _rejected_with_reason(exc)
        return
    assert all(a.name and a.fingerprint for a in batch.alerts)


@FUZZ
@given(_bodies(PUSH))
def test_prometheus_push(body: bytes) -> None:
    try:
        alerts = parse_alerts(body, NOW)
    except InputError as exc:
        _rejected_with_reason(exc)
        return
    assert all(a.name for a in alerts)


@FUZZ
@given(st.one_of(st.none(), _bodies(DEPLOY)))
def test_kafka_deploy_event(value: bytes | None) -> None:
    try:
        event = parse_deploy_event(value)
    except InputError as exc:
        _rejected_with_reason(exc)
        return
    assert event.event_id
    assert event.namespace
    assert event.deployment


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-rules")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.text(max_size=300),
        json_values.map(yaml.safe_dump),
        mutated(RULES).map(yaml.safe_dump),
    )
)
def test_rule_files(rules_dir: Path, text: str) -> None:
    path = rules_dir / "fuzz.yaml"
    path.write_text(text)
    ruleset, errors, _warnings = load_ruleset([path])
    if ruleset is None:
        assert errors, "a refused rule file must list its errors"
        for error in errors:
            assert error.message.strip(), error
            assert error.file.endswith("fuzz.yaml")
    else:
        assert not errors
