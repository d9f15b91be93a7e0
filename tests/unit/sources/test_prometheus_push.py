"""Prometheus' alert push: endsAt decides firing vs resolved, fingerprints match Alertmanager's, bad input named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import InputError
from daemon.model import AlertStatus
from daemon.sources.common import fingerprint
from daemon.sources.prometheus_push import MAX_BATCH, parse_alerts

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pushed(ends_in_s: float | None, **labels: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "web", **labels},
        "annotations": {"value": "0.2"},
        "startsAt": "2026-01-01T11:50:00.5Z",
        "generatorURL": "http://prometheus/graph",
    }
    if ends_in_s is not None:
        item["endsAt"] = (NOW + timedelta(seconds=ends_in_s)).isoformat()
    return item


def parse(items: list[dict[str, Any]]) -> Any:
    return parse_alerts(json.dumps(items).encode(), NOW)


def test_ends_at_in_the_future_is_firing_and_in_the_past_resolved() -> None:
    firing, resolved, open_ended = parse([pushed(60), pushed(-1, pod="b"), pushed(None, pod="c")])
    assert firing.status is AlertStatus.FIRING
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ends_at == NOW - timedelta(seconds=1)
    assert open_ended.status is AlertStatus.FIRING
    assert firing.source == "prometheus"
    assert firing.value == pytest.approx(0.2)
    assert firing.starts_at == datetime(2026, 1, 1, 11, 50, 0, 500000, tzinfo=UTC)


def test_resends_of_the_same_alert_share_one_dedupe_key() -> None:
    # Prometheus resends a firing alert with a later endsAt each time; the episode is the same.
    (first,) = parse([pushed(60)])
    (again,) = parse([pushed(120)])
    assert first.dedupe_key == again.dedupe_key
    assert first.fingerprint == fingerprint(dict(first.labels))


def test_missing_starts_at_is_now() -> None:
    item = pushed(60)
    del item["startsAt"]
    (alert,) = parse([item])
    assert alert.starts_at == NOW


def test_more_than_a_prometheus_batch_is_refused() -> None:
    with pytest.raises(InputError) as err:
        parse([pushed(60, pod=str(i)) for i in range(MAX_BATCH + 1)])
    assert err.value.reason == "batch_too_large"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"labels": {}}, "(body)"),  # an object, not an array
        ([{"annotations": {}}], "0.labels"),
        ([{"labels": {"alertname": "X"}, "endsAt": 5}], "0.endsAt"),
        ([{"labels": {"alertname": 3}}], "0.labels.alertname"),
        ([{"labels": {"job": "x"}}], "0.labels.alertname"),
    ],
)
def test_bad_input_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_alerts(json.dumps(body), NOW)
    assert field in str(err.value)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["labels", "annotations", "startsAt", "endsAt", "alertname", "x"]), inner, max_size=3
            )
        ),
        max_leaves=10,
    )
)
def test_any_json_parses_or_is_rejected_with_a_reason(body: Any) -> None:
    try:
        parse_alerts(json.dumps(body), NOW)
    except InputError as exc:
        error = exc
    else:
        return  # parsed: fine
    assert error.reason
    assert str(error).startswith("prometheus alerts: ")
