"""CEL conditions: the compiled runtime answers as cel-python's interpreter did, but where the spec says otherwise.

cel-python is the reference (it still parses every expression and evaluates what the compiled
runtime cannot take): each expression below is evaluated by both on alerts with and without a
value, labels and a deploy. The few answers that differ are listed with the new one, each a case
where cel-python departs from the CEL specification and so never matched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from daemon.deploys import DeployEvent, DeployKind
from daemon.model import Alert, AlertStatus, Target
from daemon.rules.cel import CelCondition, activation
from daemon.target import WorkloadKind

T0 = datetime(2026, 1, 1, tzinfo=UTC)

SAME = [
    "value > 0.5", "value >= 1", "value > 1", "value == 3.0", "value == null", "-value < 0",
    "value > 0.5 && value < 1.0", "value in [0.9, 3.0]", "type(value) == double",
    'labels.env == "prod"', 'labels.env != "prod"', 'labels.missing == "x"', '!(labels.missing == "x")',
    'labels.missing == "x" || value > 0.5', 'value > 0.5 || labels.missing == "x"', 'labels.missing == "x" && false',
    '"env" in labels', "has(labels.env)", "has(labels.missing)", 'labels["env"] == "prod"',
    'labels.env.startsWith("pr")', 'labels.env.endsWith("od")', 'labels.env.contains("ro")',
    'labels.env.matches("^p.*")', 'labels.env.matches("r")', "size(labels) > 1", "size(labels.env) == 4",
    'labels.n == "5"', "int(labels.n) > 4", '"a" + labels.env == "aprod"',
    "deploy.migration", "!deploy.migration", "deploy.present && deploy.revision > 2", "deploy.revision == 3",
    "deploy.revision + 1 == 4", "deploy.revision / 0 == 1", "deploy.revision % 2 == 1",
    "double(deploy.revision) > 2.5", 'string(deploy.revision) == "3"', 'deploy.kind == "succeeded"',
    'deploy.author in ["bob", "alice"]', 'deploy.version < "v2"', "deploy.namespace.size() == 4",
    "9223372036854775807 + deploy.revision > 0", "type(deploy.revision) == int",
    "[1, 2, 3].exists(x, x == deploy.revision)", "labels.all(k, k.size() > 1)",
    'labels.exists(k, labels[k] == "prod")',
    'alert.name == "ErrorRate"', 'alert.status == "firing"', 'alert.labels.env == "prod"',
    'alert.source == "alertmanager"', 'annotations.summary == "s"', "value > 0.5 ? true : false",
    'timestamp("2026-01-01T00:00:00Z") < timestamp("2026-01-02T00:00:00Z")', 'duration("1h") > duration("30m")',
    "value", "1", '"true"',
    # int/double arithmetic: an error in the spec, computed by cel-python; the interpreter answers these.
    "value * 2 > 1", "int(value * 100) > 50", "deploy.revision * 1.5 > 4.0",
]  # fmt: skip

# Where cel-python departs from the spec, the compiled runtime's answer is the spec's.
# (expression, case) -> the new answer; cel-python's was False (an evaluation error) or, for int(null), True.
SPEC = {
    ("value == 3", "big"): True,  # heterogeneous numeric equality
    ("value != null", "full"): True,  # cel-python has no double != null
    ("value != null", "small"): True,
    ("value != null", "big"): True,
    ("deploy.revision > 2.5", "full"): True,  # heterogeneous numeric ordering
    ("deploy.revision > 2.5", "small"): True,
    ("deploy.revision == 3.0", "full"): True,
    ("deploy.revision == 3.0", "small"): True,
    ("int(value) == 0", "bare"): False,  # int(null) is an error, not 0
}
INTERPRETED = ['value > 0.5 ? "a" : false', 'deploy.image.split(":")[1] == "1"', 'labels.env.lowerAscii() == "prod"']


def _alert(value: float | None, labels: dict[str, str]) -> Alert:
    return Alert(
        "ErrorRate", AlertStatus.FIRING, MappingProxyType(labels), MappingProxyType({"summary": "s"}), T0, "fp",
        "alertmanager", Target("prod", "web"), value=value,
    )  # fmt: skip


DEPLOY = DeployEvent(
    "d1", DeployKind.SUCCEEDED, "checkout", "prod", "web", T0, revision=3, image="img:1", version="v1", author="bob",
    migration=True,
)  # fmt: skip
CASES = {
    "full": (_alert(0.9, {"env": "prod", "service": "checkout"}), DEPLOY),
    "bare": (_alert(None, {"env": "prod"}), None),
    "small": (_alert(0.01, {}), DEPLOY),
    "big": (_alert(3.0, {"env": "staging", "n": "5"}), None),
}
_REFERENCE = celpy.Environment()


def _reference(source: str, case: str) -> bool:
    """cel-python's answer, as the engine gave it before the compiled runtime."""
    data: Any = json_to_cel(activation(*CASES[case]).data)
    try:
        result = _REFERENCE.program(_REFERENCE.compile(source)).evaluate(data)
    except (celpy.evaluation.CELEvalError, TypeError, ValueError, KeyError, ZeroDivisionError):
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


@pytest.mark.parametrize("source", SAME + sorted({s for s, _ in SPEC}) + INTERPRETED)
def test_compiled_answers_as_the_interpreter_but_where_the_spec_differs(source: str) -> None:
    cond = CelCondition(source)
    assert (cond.interpreted_because is not None) == (source in INTERPRETED), cond.interpreted_because
    for case, (alert, deploy) in CASES.items():
        want = SPEC.get((source, case), _reference(source, case))
        assert cond.holds(activation(alert, deploy), rule="r") is want, (source, case)
        if (source, case) in SPEC:
            assert _reference(source, case) is not want  # the listed difference is real


def test_one_activation_serves_every_condition_of_an_alert() -> None:
    act = activation(*CASES["full"])
    conditions = [CelCondition(s) for s in ("value > 0.5", 'labels.env == "prod"', "value * 2 > 1")]
    assert [c.holds(act, rule="r") for c in conditions] == [True, True, True]
    assert act.compiled() is act.compiled()


def test_a_syntax_error_names_where_the_parser_gave_up() -> None:
    """The message ``rules check`` prints: cel-python still parses first."""
    expected = "expected a valid CEL expression, syntax error at character 7: 'value ⟨here⟩>'"
    with pytest.raises(ValueError, match=expected):
        CelCondition("value >")


def test_a_condition_reads_the_deployed_workloads_kind() -> None:
    """``deploy.workload_kind`` is the kind the deploy event named; ``deploy.kind`` stays the event's type."""
    sts = DeployEvent(
        "d2", DeployKind.SUCCEEDED, "ledger", "prod", "ledger", T0, revision=4, workload_kind=WorkloadKind.STATEFULSET
    )
    alert, _ = CASES["full"]
    cond = CelCondition('deploy.workload_kind == "statefulset"')
    assert cond.interpreted_because is None  # the compiled runtime takes it
    assert cond.holds(activation(alert, sts), rule="r")
    assert not cond.holds(activation(alert, DEPLOY), rule="r")  # a Deployment's deploy event
    assert not cond.holds(activation(alert, None), rule="r")  # no deploy: ""
    assert CelCondition('deploy.kind == "succeeded"').holds(activation(alert, sts), rule="r")
