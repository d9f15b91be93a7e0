"""Targets of every kind: how alerts name them (kube-state-metrics' labels), how people write them."""

from __future__ import annotations

import pytest

from daemon.model import Alert
from daemon.target import Target, WorkloadKind, target_from_labels

STS = WorkloadKind.STATEFULSET
DS = WorkloadKind.DAEMONSET


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"namespace": "prod", "deployment": "api"}, Target("prod", "api")),
        ({"namespace": "prod", "statefulset": "ledger"}, Target("prod", "ledger", STS)),
        ({"namespace": "kube-system", "daemonset": "agent"}, Target("kube-system", "agent", DS)),
        ({"daemonset": "agent"}, Target("default", "agent", DS)),
        ({"namespace": "prod", "kind": "StatefulSet", "name": "ledger"}, Target("prod", "ledger", STS)),
        (
            {"namespace": "prod", "kind": "statefulset", "statefulset": "ledger", "name": "x"},
            Target("prod", "ledger", STS),
        ),
        # a ``kind`` that names no workload kind is some other label: the kind labels decide
        ({"namespace": "prod", "kind": "latency", "deployment": "api"}, Target("prod", "api")),
        ({"namespace": "prod", "kind": "DaemonSet"}, None),
        ({"namespace": "prod", "service": "api"}, None),
    ],
)
def test_target_from_labels(labels: dict[str, str], expected: Target | None) -> None:
    assert target_from_labels(labels) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prod/api", Target("prod", "api")),
        ("api", Target("default", "api")),
        ("statefulset/prod/ledger", Target("prod", "ledger", STS)),
        ("sts/prod/ledger", Target("prod", "ledger", STS)),
        ("statefulsets.apps/prod/ledger", Target("prod", "ledger", STS)),
        ("DaemonSet/kube-system/agent", Target("kube-system", "agent", DS)),
        ("deployment/prod/api", Target("prod", "api")),
    ],
)
def test_parse_and_round_trip(text: str, expected: Target) -> None:
    target = Target.parse(text)
    assert target == expected
    assert Target.parse(str(target)) == target
    assert Target.from_json(target.to_json()) == target


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"unknown workload kind 'cronjob': expected deployment, statefulset or daemonset"
    ):
        Target.parse("cronjob/prod/nightly")


def test_a_deployment_reads_and_writes_as_before_kinds() -> None:
    assert str(Target("prod", "api")) == "prod/api"
    assert Target("prod", "api").to_json() == {"namespace": "prod", "name": "api"}
    assert str(Target("prod", "ledger", STS)) == "statefulset/prod/ledger"
    assert Target("prod", "ledger", STS).display == "StatefulSet prod/ledger"
    assert Target.from_json({"namespace": "prod", "name": "api"}) == Target("prod", "api")


def test_alert_json_keeps_the_kind() -> None:
    alert = Alert.from_json(
        {"name": "HighLag", "status": "firing", "labels": {"namespace": "prod", "statefulset": "ledger"},
         "starts_at": "2026-01-01T00:00:00+00:00", "fingerprint": "f", "source": "alertmanager"}
    )  # fmt: skip
    assert alert.target == Target("prod", "ledger", STS)
    assert Alert.from_json(alert.to_json()).target == alert.target
