"""``rollbackd rules test``: unit tests for rules, in the spirit of ``promtool test rules``.

A test file gives a timeline (deployments, alerts firing or resolving, with
values) and the decisions expected at given times. Each expected decision
lists only the fields it cares about; a mismatch prints a unified diff of
expected vs got. Coverage tells which rules no test exercised.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from daemon.deploys import DeployEvent, DeployHistory, DeployKind
from daemon.model import Alert, AlertStatus, Decision, QuorumMode
from daemon.rules.durations import Duration, format_duration
from daemon.rules.freeze import FreezeWindow, in_force, with_freeze
from daemon.rules.loader import RuleError, parse_yaml
from daemon.rules.registry import load_ruleset
from daemon.rules.ruleset import RuleSet
from daemon.rules.schema import ApprovalDef
from daemon.target import WorkloadKind, target_from_labels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DeployStep(_Strict):
    at: Duration
    service: str = ""
    namespace: str = "default"
    deployment: str
    kind: DeployKind = DeployKind.SUCCEEDED
    workload_kind: WorkloadKind = WorkloadKind.DEPLOYMENT  # statefulset, daemonset: the deploy event's kind
    revision: int | None = None
    version: str = ""
    image: str = ""
    migration: bool = False


class AlertStep(_Strict):
    at: Duration
    name: str
    status: AlertStatus = AlertStatus.FIRING
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    started: Duration | None = Field(None, description="When the alert started (default: at).")


class ExpectedDecision(_Strict):
    rule: str
    severity: str | None = None
    action: str | None = None
    within: Duration | None = None
    objective: Duration | None = None
    approval: ApprovalDef | Literal["none"] | None = None
    targets: list[str] | None = None
    irreversible: bool | None = None
    channels: list[str] | None = None
    to_revision: int | None = None
    deploy_version: str | None = None
    freeze: str | None = Field(
        None, description="'none', or the freeze window in force: 'block NAME' / 'require_approval NAME'."
    )


class Expectation(_Strict):
    at: Duration
    decisions: list[ExpectedDecision]


class RuleTest(_Strict):
    name: str
    deploys: list[DeployStep] = Field(default_factory=list)
    alerts: list[AlertStep] = Field(min_length=1)
    expect: list[Expectation] = Field(min_length=1)


class RuleTestFile(_Strict):
    api_version: Literal["rollbackd/v1"] = Field(alias="apiVersion")
    rule_files: list[str] = Field(default_factory=lambda: [".."], description="Relative to the test file.")
    start: AwareDatetime = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    tests: list[RuleTest] = Field(min_length=1)


@dataclass
class TestOutcome:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class TestReport:
    outcomes: list[TestOutcome] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    exercised: set[str] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.errors and all(o.ok for o in self.outcomes)

    @property
    def uncovered(self) -> list[str]:
        return sorted(self.rules - self.exercised)


def run_files(paths: Sequence[Path], *, at: datetime | None = None) -> TestReport:
    """Run every test of ``paths``; ``at`` replaces each file's ``start`` (to test freeze windows at a time)."""
    report = TestReport()
    for path in paths:
        docs, errors = parse_yaml(path, RuleTestFile)
        report.errors.extend(errors)
        for doc, _ in docs:
            rule_paths = [(path.parent / p).resolve() for p in doc.rule_files]
            ruleset, rule_errors, _ = load_ruleset(rule_paths)
            if ruleset is None:
                report.errors.extend(rule_errors)
                continue
            report.rules |= {t.spec.name for t in ruleset.thresholds} | {d.name for d in ruleset.decisions}
            for test in doc.tests:
                start = at or doc.start
                report.outcomes.append(run_test(str(path), ruleset, start, test, report.exercised))
    return report


def run_test(file: str, ruleset: RuleSet, start: datetime, test: RuleTest, exercised: set[str]) -> TestOutcome:
    """Replay the timeline; compare the decisions at each expected time."""
    outcome = TestOutcome(file, test.name)
    events: list[tuple[float, int, DeployStep | AlertStep]] = [(d.at, 0, d) for d in test.deploys]
    events += [(a.at, 1, a) for a in test.alerts]  # deploys at the same instant come first
    history: list[DeployEvent] = []
    got: dict[float, list[tuple[Decision, str]]] = {}
    for i, (at, _, step) in enumerate(sorted(events, key=lambda e: (e[0], e[1]))):
        when = start + timedelta(seconds=at)
        if isinstance(step, DeployStep):
            history.insert(0, _deploy(step, when, i))
            continue
        exercised.add(step.labels.get("rollbackd_rule", step.name))
        decisions = ruleset.evaluate(_alert(step, start, when), DeployHistory(tuple(history)))
        exercised.update(d.rule for d in decisions)
        # As the pipeline does at ``when``: a require_approval window adds its role; a block window holds.
        windows = ruleset.freeze_windows
        got.setdefault(at, []).extend(
            (with_freeze(d, windows, when), _freeze_text(windows, d, when)) for d in decisions
        )
    for exp in test.expect:
        actual = got.get(exp.at, [])
        want = [_expected(e) for e in exp.decisions]
        have = [_actual(d, e) for d, e in zip(actual, exp.decisions, strict=False)]
        have += [_actual(d, None) for d in actual[len(exp.decisions) :]]
        if want != have:
            outcome.failures.append(_diff(format_duration(exp.at) if exp.at else "0s", want, have))
    return outcome


def _deploy(step: DeployStep, when: datetime, i: int) -> DeployEvent:
    return DeployEvent(
        event_id=f"test-deploy-{i}",
        kind=step.kind,
        service=step.service or step.deployment,
        namespace=step.namespace,
        deployment=step.deployment,
        at=when,
        revision=step.revision,
        image=step.image,
        version=step.version,
        migration=step.migration,
        workload_kind=step.workload_kind,
    )


def _alert(step: AlertStep, start: datetime, when: datetime) -> Alert:
    started = start + timedelta(seconds=step.started) if step.started is not None else when
    key = repr((step.name, sorted(step.labels.items()))).encode()
    return Alert(
        name=step.name,
        status=step.status,
        labels=MappingProxyType({**step.labels, "alertname": step.name}),
        annotations=MappingProxyType({}),
        starts_at=started,
        fingerprint=hashlib.sha256(key).hexdigest()[:16],
        source="rules-test",
        target=target_from_labels(step.labels),
        ends_at=when if step.status is AlertStatus.RESOLVED else None,
        value=step.value,
    )


def _approval_text(roles: dict[str, int], all_of: bool, deadline: float | None, on_deadline: str) -> dict[str, Any]:
    out: dict[str, Any] = {"all_of" if all_of else "any_of": dict(sorted(roles.items()))}
    if deadline is not None:
        out["deadline"] = format_duration(deadline)
    out["on_deadline"] = on_deadline
    return out


def _expected(e: ExpectedDecision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in e.model_dump(exclude_none=True, by_alias=True).items():
        value = raw
        if key in ("within", "objective"):
            value = format_duration(getattr(e, key))
        if key == "approval" and isinstance(e.approval, ApprovalDef):
            a = e.approval
            value = _approval_text(a.role_counts(), a.all_of is not None, a.deadline, a.on_deadline.value)
        out[key] = value
    return out


def _freeze_text(windows: Sequence[FreezeWindow], d: Decision, when: datetime) -> str:
    hit = in_force(windows, d, when)
    return f"{hit.window.effect} {hit.window.name}" if hit else "none"


def _actual(decided: tuple[Decision, str], shape: ExpectedDecision | None) -> dict[str, Any]:
    d, freeze = decided
    a = d.approval
    full: dict[str, Any] = {
        "rule": d.rule,
        "severity": d.severity.value,
        "action": d.action.value,
        "within": format_duration(d.act_within_s) if d.act_within_s is not None else None,
        "objective": format_duration(d.rollback_time_objective_s) if d.rollback_time_objective_s else None,
        "approval": _approval_text(dict(a.roles), a.mode is QuorumMode.ALL_OF, a.deadline_s, a.on_deadline.value)
        if a.required
        else "none",
        "targets": [str(t) for t in d.targets],
        "irreversible": d.irreversible,
        "channels": list(d.channels),
        "to_revision": d.to_revision,
        "deploy_version": d.deploy.version if d.deploy else None,
        "freeze": freeze if shape is not None and shape.freeze is not None else None,
    }
    if shape is None:
        return {k: v for k, v in full.items() if v is not None}
    wanted = shape.model_dump(exclude_none=True).keys()
    return {k: full[k] for k in full if k in wanted}


def _diff(at: str, want: list[dict[str, Any]], have: list[dict[str, Any]]) -> str:
    a = yaml.safe_dump(want, sort_keys=False).splitlines()
    b = yaml.safe_dump(have, sort_keys=False).splitlines()
    body = "\n".join(difflib.unified_diff(a, b, "expected", "got", lineterm=""))
    return f"decisions at {at} differ:\n{body}"
