"""Evaluation: matchers, CEL, correlation, the irreversibility guard, targets, fallback notices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from daemon.deploys import DeployHistory, DeployKind
from daemon.model import ActionKind, QuorumMode, Target
from daemon.rules import RuleSet, load_ruleset
from daemon.target import WorkloadKind

from .conftest import BASE, SHIPPED, alert, deploy

RULES = (
    BASE
    + """\
irreversible_guard:
  when: deploy.migration
  approval: {all_of: [CTO, Data Lead], deadline: 10m, on_deadline: hold}
health_checks:
  web:
    - {url: "http://web.{namespace}.svc/health", expect_body: ok, timeout: 5s}
thresholds:
  - name: ErrorRate
    component: App
    metric: errors
    expr: rate(errors_total[5m])
    comparator: ">"
    threshold: 0.01
    severity: P2
decisions:
  - name: audit
    match: ['alertname=~"ErrorRate|Latency"', 'env!="staging"']
    severity: P2
    action: notify
    continue: true
  - name: errors-high
    match: ['alertname="ErrorRate"']
    when: value > 0.05 && labels.env == "prod"
    severity: P1
    action: rollback_within
    within: 30m
    approval: {any_of: {Engineering Lead: 1}, deadline: 5m, on_deadline: proceed}
    correlate: {within: 1h, required: true}
  - name: group-down
    match: ['alertname="GroupDown"']
    severity: P0
    action: rollback_now
    approval: {all_of: [CTO]}
    targets: [prod/api-gateway, prod/ai-inference]
    verify: {promql: "up", comparator: "==", threshold: 1, within: 1m, health: false}
"""
)


def ruleset(write: Callable[[str, str], Path]) -> RuleSet:
    rs, errors, _ = load_ruleset([write("r.yaml", RULES)])
    assert rs is not None, errors
    return rs


def test_cel_and_correlation_choose_the_rollback(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    history = DeployHistory((deploy(20, 8), deploy(0, 7)))
    decisions = rs.evaluate(alert("ErrorRate", 30, 0.2, env="prod", namespace="prod", deployment="web"), history)
    assert [d.rule for d in decisions] == ["audit", "errors-high"]
    d = decisions[1]
    assert d.action is ActionKind.ROLLBACK_WITHIN
    assert d.act_within_s == 1800
    assert d.targets == (Target("prod", "web"),)
    assert d.deploy is not None
    assert d.deploy.revision == 8
    assert d.to_revision == 7
    assert d.approval.mode is QuorumMode.ANY_OF
    assert d.channels == ("pager",)  # routing for P1
    assert d.measured["value"] == 0.2
    assert not d.irreversible


def test_low_value_or_no_deploy_falls_back_to_the_threshold_notice(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    labels = {"env": "prod", "namespace": "prod", "deployment": "web"}
    old_deploy = DeployHistory((deploy(-120, 8),))
    for a, history in [
        (alert("ErrorRate", 30, 0.02, **labels), DeployHistory((deploy(20, 8),))),
        (alert("ErrorRate", 30, 0.2, **labels), old_deploy),
        (alert("ErrorRate", 30, None, **labels), DeployHistory((deploy(20, 8),))),
    ]:
        decisions = rs.evaluate(a, history)
        assert [(d.rule, d.action) for d in decisions] == [("audit", ActionKind.NOTIFY)]
    # Staging is excluded from the audit rule: the threshold's own notice is all that remains.
    [notice] = rs.evaluate(alert("ErrorRate", 30, 0.02, env="staging", deployment="web"), DeployHistory())
    assert (notice.rule, notice.action, notice.channels) == ("ErrorRate", ActionKind.NOTIFY, ("slack",))
    assert notice.targets == (Target("default", "web"),)


def test_migration_trips_the_guard_and_merges_approvers(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    history = DeployHistory((deploy(20, 8, migration=True), deploy(0, 7)))
    [_, d] = rs.evaluate(alert("ErrorRate", 30, 0.2, env="prod", namespace="prod", deployment="web"), history)
    assert d.irreversible
    assert dict(d.approval.roles) == {"CTO": 1, "Data Lead": 1}  # the rule's any_of is not merged in
    assert d.approval.mode is QuorumMode.ALL_OF
    assert d.approval.on_deadline.value == "hold"  # never "proceed" past the guard


def test_rollbacks_by_us_are_not_blamed(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    history = DeployHistory((deploy(25, 7, kind=DeployKind.ROLLED_BACK), deploy(20, 8), deploy(0, 7)))
    [_, d] = rs.evaluate(alert("ErrorRate", 30, 0.2, env="prod", namespace="prod", deployment="web"), history)
    assert d.deploy is not None
    assert d.deploy.revision == 8


def test_resolved_alert_and_unknown_alert_decide_nothing(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    assert rs.evaluate(alert("ErrorRate", 1, 0.2, status="resolved", env="prod"), DeployHistory()) == []
    assert rs.evaluate(alert("SomethingElse", 1, env="staging"), DeployHistory()) == []


def test_fixed_targets_and_verification(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    [d] = rs.evaluate(alert("GroupDown", 1, env="staging"), DeployHistory())
    assert d.targets == (Target("prod", "api-gateway"), Target("prod", "ai-inference"))
    spec = rs.verify_for(d)
    assert spec is not None
    assert (spec.promql, spec.comparator.value, spec.threshold, spec.within_s, spec.health) == ("up", "==", 1, 60, ())


def test_verification_defaults_to_health_checks_and_the_inverted_threshold(write: Callable[[str, str], Path]) -> None:
    rs = ruleset(write)
    history = DeployHistory((deploy(20, 8),))
    [_, d] = rs.evaluate(alert("ErrorRate", 30, 0.2, env="prod", namespace="prod", deployment="web"), history)
    spec = rs.verify_for(d)
    assert spec is not None
    assert [h.url for h in spec.health] == ["http://web.prod.svc/health"]
    assert spec.health[0].timeout_s == 5
    assert (spec.promql, spec.comparator.value, spec.threshold) == ("rate(errors_total[5m])", "<=", 0.01)


def test_shipped_rules_expose_what_other_stages_need() -> None:
    rs, errors, warnings = load_ruleset([SHIPPED])
    assert rs is not None, errors
    assert warnings == []
    assert len(rs.thresholds) == 16
    assert len([t for t in rs.thresholds if t.seed.startswith("4.1 ")]) == 14
    assert len([d for d in rs.decisions if d.seed.startswith("8.1 ")]) == 6
    assert {"CTO", "Engineering Lead", "Data Lead", "Product Owner", "Security Lead"} <= rs.roles
    assert rs.channels_for("P0") == ("pagerduty", "slack-incidents")
    assert dict(rs.manual_rollback.roles) == {"CTO": 1, "Engineering Lead": 2}
    assert rs.manual_rollback.mode is QuorumMode.ANY_OF
    spec = {s.name: s for s in rs.threshold_specs}["ApplicationResponseTime"]
    assert (spec.comparator.value, spec.threshold, spec.for_s, spec.channels) == (">", 0.5, 300, ("slack", "pagerduty"))
    assert rs.rule_count == 22


def test_a_statefulset_alert_correlates_with_its_own_deploys_only(write: Callable[[str, str], Path]) -> None:
    """kube-state-metrics' ``statefulset`` label names the target; a Deployment of the same name is another workload."""
    rs = ruleset(write)
    sts = WorkloadKind.STATEFULSET
    history = DeployHistory((
        deploy(25, 12),  # the Deployment web: not this alert's workload
        replace(deploy(20, 8), workload_kind=sts, event_id="s8"),
        replace(deploy(0, 7), workload_kind=sts, event_id="s7"),
    ))  # fmt: skip
    [_, d] = rs.evaluate(alert("ErrorRate", 30, 0.2, env="prod", namespace="prod", statefulset="web"), history)
    assert d.targets == (Target("prod", "web", sts),)
    assert d.deploy is not None
    assert (d.deploy.event_id, d.to_revision) == ("s8", 7)
    assert d.to_json()["targets"] == ["statefulset/prod/web"]


def test_fixed_targets_of_any_kind_and_clear_errors(write: Callable[[str, str], Path]) -> None:
    text = RULES.replace(
        "targets: [prod/api-gateway, prod/ai-inference]", "targets: [prod/api-gateway, sts/prod/ledger]"
    )
    rs, errors, _ = load_ruleset([write("r.yaml", text)])
    assert rs is not None, errors
    [d] = rs.evaluate(alert("GroupDown", 1, env="staging"), DeployHistory())
    assert d.targets == (Target("prod", "api-gateway"), Target("prod", "ledger", WorkloadKind.STATEFULSET))
    rs, errors, _ = load_ruleset([write("r.yaml", RULES.replace("prod/ai-inference", "cronjob/prod/nightly"))])
    assert rs is None
    assert "unknown workload kind 'cronjob'" in str(errors)
