"""Alertmanager webhook parsing: every v4 field, strict types, tolerant of new fields, clear rejections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import InputError
from daemon.model import AlertStatus
from daemon.sources.alertmanager import parse_webhook
from daemon.sources.common import fingerprint


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "namespace": "shop"},
        "commonAnnotations": {"summary": "errors"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "web"},
                "annotations": {"summary": "errors", "value": "0.07"},
                "startsAt": "2026-01-01T10:00:00.123456789+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph?g0.expr=x",
                "fingerprint": "c0ffee0000000001",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "api"},
                "annotations": {},
                "startsAt": "2026-01-01T09:00:00Z",
                "endsAt": "2026-01-01T09:30:00Z",
                "generatorURL": "",
                "fingerprint": "",
            },
        ],
    }
    body.update(overrides)
    return body


def parse(body: dict[str, Any]) -> Any:
    return parse_webhook(json.dumps(body).encode())


def test_every_field_of_a_v4_payload_reaches_the_alert() -> None:
    batch = parse(payload(truncatedAlerts=3))
    assert batch.truncated_alerts == 3
    assert batch.receiver == "rollbackd"
    assert batch.group_key == '{}:{alertname="HighErrorRate"}'
    firing, resolved = batch.alerts
    assert firing.name == "HighErrorRate"
    assert firing.status is AlertStatus.FIRING
    assert firing.source == "alertmanager"
    assert firing.fingerprint == "c0ffee0000000001"
    assert firing.value == pytest.approx(0.07)
    assert firing.generator_url == "http://prometheus/graph?g0.expr=x"
    # normalised to UTC, sub-microsecond digits dropped; Go's zero time means "no end"
    assert firing.starts_at == datetime(2026, 1, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert firing.ends_at is None
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ends_at == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    # no fingerprint given: Alertmanager's own hash of the label set
    assert resolved.fingerprint == fingerprint(dict(resolved.labels))
    assert resolved.value is None


def test_unknown_fields_are_tolerated() -> None:
    body = payload(newTopLevelField={"x": 1})
    body["alerts"][0]["someFutureField"] = [1, 2]
    assert len(parse(body).alerts) == 2


@pytest.mark.parametrize("version", ["3", "5", ""])
def test_another_version_is_refused_with_its_reason(version: str) -> None:
    with pytest.raises(InputError) as err:
        parse(payload(version=version))
    assert err.value.reason == "wrong_version"
    assert "version" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["alerts"][0]["labels"].update(severity=1), "alerts.0.labels.severity"),
        (lambda b: b["alerts"][1].update(startsAt="yesterday"), "alerts.1.startsAt"),
        (lambda b: b["alerts"][1].update(startsAt="2026-01-01T09:00:00"), "alerts.1.startsAt"),  # no offset
        (lambda b: b["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda b: b.update(truncatedAlerts="2"), "truncatedAlerts"),
        (lambda b: b.update(version=4), "version"),
        (lambda b: b.pop("alerts"), "alerts"),
        (lambda b: b["alerts"][0]["labels"].pop("alertname"), "alerts.0.labels.alertname"),
    ],
)
def test_a_bad_field_is_named_in_the_rejection(mutate: Any, field: str) -> None:
    body = payload()
    mutate(body)
    with pytest.raises(InputError) as err:
        parse(body)
    assert field in str(err.value)


def test_broken_json_is_malformed() -> None:
    with pytest.raises(InputError) as err:
        parse_webhook(b'{"version": "4", "alerts": [')
    assert err.value.reason == "malformed_json"


def test_fingerprint_matches_alertmanager() -> None:
    # Values Alertmanager itself computed (model.LabelSet.Fingerprint), checked in the integration test too.
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"a": "b"}) != fingerprint({"ab": ""})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, st.builds(payload), st.binary(max_size=64)))
def test_any_input_parses_or_is_rejected_with_a_reason(body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        parse_webhook(raw)
    except InputError as exc:
        error = exc
    else:
        return  # parsed: fine
    assert error.reason
    assert ":" in str(error)  # "<what>: <field>: <problem>"
