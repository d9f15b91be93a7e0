"""Deployment events against the published JSON Schema: valid ones become DeployEvents, others name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.deploys import DeployEvent, DeployKind
from daemon.errors import InputError
from daemon.sources.deploy_events import _plainly_valid, parse_deploy_event, validator
from daemon.target import Target, WorkloadKind


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
    ("kind", "expected"),
    [("StatefulSet", WorkloadKind.STATEFULSET), ("DaemonSet", WorkloadKind.DAEMONSET), (None, WorkloadKind.DEPLOYMENT)],
)
def test_an_event_names_the_workload_kind(kind: str | None, expected: WorkloadKind) -> None:
    body = event() if kind is None else event(kind=kind)
    assert _plainly_valid(body)
    ev = parse_deploy_event(json.dumps(body).encode())
    assert ev.workload_kind is expected
    assert ev.target == Target("shop", "checkout-web", expected)
    assert DeployEvent.from_json(ev.to_json()) == ev


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (b"not json", "malformed_json", "(message)"),
        (b"", "malformed_json", "(message)"),
        (json.dumps(event(type="exploded")).encode(), "schema_invalid", "type"),
        (json.dumps(event(schema_version=2)).encode(), "schema_invalid", "schema_version"),
        (json.dumps(event(revision="7")).encode(), "schema_invalid", "revision"),
        (json.dumps(event(surprise=1)).encode(), "schema_invalid", "(document)"),
        (json.dumps(event(kind="CronJob")).encode(), "schema_invalid", "kind"),
        (json.dumps(event(kind="statefulset")).encode(), "schema_invalid", "kind"),
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


# The fast path must never accept what the published schema rejects, and must actually be taken for
# ordinary events (otherwise the Kafka consumer silently falls back to ~5k events/s of jsonschema).
_SCHEMA = validator("deploy-event.v1.json")
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=3),
    st.floats(allow_nan=False, min_value=-2, max_value=3),
    st.sampled_from(
        [
            "StatefulSet",
            "Job",
            "",
            "a",
            "shop",
            "Shop",
            "shop\n",
            "-x",
            "a.b",
            "succeeded",
            "x" * 256,
            "2026-01-01T10:00:00Z",
        ]
    ),
    st.lists(st.integers(), max_size=1),
    st.dictionaries(st.sampled_from(["occurred_at", "started_at", "finished_at", "extra"]), st.text(max_size=3)),
)


def test_ordinary_events_take_the_fast_path() -> None:
    assert _plainly_valid(event())
    assert _plainly_valid(event(revision=None, migration=False, timestamps={"occurred_at": "x"}))
    minimal = {k: v for k, v in event().items() if k in ("schema_version", "event_id", "type", "service")}
    assert _plainly_valid(minimal | {"namespace": "a", "deployment": "b", "timestamps": {"occurred_at": "t"}})


@given(
    changes=st.dictionaries(st.sampled_from([*event(), "kind", "surprise"]), _values, max_size=3),
    drop=st.sets(st.sampled_from(list(event())), max_size=2),
)
def test_the_fast_path_never_accepts_what_the_schema_rejects(changes: dict[str, Any], drop: set[str]) -> None:
    document = {k: v for k, v in (event() | changes).items() if k not in drop}
    if _plainly_valid(document):
        assert _SCHEMA.is_valid(document), document


@pytest.mark.parametrize(
    "bad",
    [
        event(schema_version=True),
        event(schema_version=1.0),
        event(revision=True),
        event(revision=0),
        event(event_id=""),
        event(commit="c" * 65),
        event(migration=None),
        event(timestamps={"occurred_at": "t", "ended_at": "t"}),
        event(timestamps={"started_at": "t"}),
        event(surprise=1),
        event(kind=["StatefulSet"]),
        event(kind=None),
        [event()],
    ],
)
def test_the_fast_path_leaves_edge_cases_to_jsonschema(bad: Any) -> None:
    assert not _plainly_valid(bad)
