"""Deployment events against the published JSON Schema: valid ones become DeployEvents, others name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from daemon.errors import InputError
from daemon.model import DeployKind
from daemon.sources.deploy_events import parse_deploy_event


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "evt-1",
        "type": "succeeded",
        "service": "checkout",
        "namespace": "shop",
        "deployment": "checkout-web",
        "revision": 7,
        "image": "registry/checkout:2.4.1",
        "version": "2.4.1",
        "commit": "abc123",
        "author": "dana",
        "migration": True,
        "timestamps": {"occurred_at": "2026-01-01T10:05:00+01:00", "started_at": "2026-01-01T10:00:00+01:00"},
    }
    body.update(overrides)
    return body


def test_a_valid_event_carries_every_field() -> None:
    ev = parse_deploy_event(json.dumps(event()).encode())
    assert ev.kind is DeployKind.SUCCEEDED
    assert (ev.service, ev.namespace, ev.deployment, ev.revision) == ("checkout", "shop", "checkout-web", 7)
    assert (ev.image, ev.version, ev.commit, ev.author, ev.migration) == (
        "registry/checkout:2.4.1",
        "2.4.1",
        "abc123",
        "dana",
        True,
    )
    assert ev.at == datetime(2026, 1, 1, 9, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (b"not json", "malformed_json", "(message)"),
        (b"", "malformed_json", "(message)"),
        (json.dumps(event(type="exploded")).encode(), "schema_invalid", "type"),
        (json.dumps(event(schema_version=2)).encode(), "schema_invalid", "schema_version"),
        (json.dumps(event(revision="7")).encode(), "schema_invalid", "revision"),
        (json.dumps(event(surprise=1)).encode(), "schema_invalid", "(document)"),
        (json.dumps(event(timestamps={"occurred_at": "tuesday"})).encode(), "schema_invalid", "timestamps.occurred_at"),
        (
            json.dumps(event(timestamps={"occurred_at": "2026-01-01T10:00:00"})).encode(),
            "schema_invalid",
            "occurred_at",
        ),
        (json.dumps({k: v for k, v in event().items() if k != "service"}).encode(), "schema_invalid", "service"),
    ],
)
def test_bad_events_are_rejected_with_reason_and_field(body: bytes, reason: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_deploy_event(body)
    assert err.value.reason == reason
    assert field in str(err.value)
