"""``rollbackd rules check|test|export`` as an SRE runs them: output and exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from click.testing import CliRunner

from daemon.cli.rules import group

from .conftest import BASE, SHIPPED


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(group, list(args))
    return result.exit_code, result.output


def test_shipped_rules_check_clean_with_the_real_promtool() -> None:
    code, out = run("check", str(SHIPPED))
    assert code == 0, out
    assert "SUCCESS: 16 threshold rules, 6 decision rules" in out


def test_check_reports_bad_promql_at_its_rule(write: Callable[[str, str], Path]) -> None:
    path = write(
        "t.yaml",
        BASE + "thresholds:\n  - {name: Bad, component: A, metric: m, expr: 'sum(rate(x[5m])', "
        "comparator: '>', threshold: 1, severity: P2}\n",
    )
    code, out = run("check", str(path))
    assert code == 1
    assert f"{path}:11:5: thresholds[0].expr: promtool rejects the expression: could not parse expression" in out


def test_lint_problems_exit_3_only_when_fatal(write: Callable[[str, str], Path]) -> None:
    path = write(
        "t.yaml", BASE + "decisions:\n  - {name: x, match: ['alertname=\"X\"'], severity: P1, action: rollback_now}\n"
    )
    assert run("check", "--no-promtool", str(path))[0] == 0
    code, out = run("check", "--no-promtool", "--lint-fatal", str(path))
    assert code == 3
    assert "rolls back without anyone's approval" in out


def test_shipped_rule_tests_pass_and_cover_every_rule() -> None:
    files = sorted(str(p) for p in (SHIPPED / "tests").glob("*.yaml"))
    code, out = run("test", "--fail-uncovered", *files)
    assert code == 0, out
    assert "22 passed, 0 failed" in out
    assert "no test exercised" not in out


def test_failing_rule_test_prints_a_diff(write: Callable[[str, str], Path], tmp_path: Path) -> None:
    write(
        "rules.yaml",
        BASE + "decisions:\n  - {name: down, match: ['alertname=\"Down\"'], severity: P0, "
        "action: rollback_now, approval: {all_of: [CTO]}}\n",
    )
    test = write(
        "t.test.yaml",
        """\
apiVersion: rollbackd/v1
rule_files: [rules.yaml]
tests:
  - name: down rolls back with two approvers
    alerts: [{at: 1m, name: Down, labels: {deployment: web}}]
    expect:
      - at: 1m
        decisions: [{rule: down, severity: P0, approval: {all_of: [CTO, Data Lead]}, targets: [default/web]}]
""",
    )
    code, out = run("test", str(test))
    assert code == 1
    assert "FAIL" in out
    assert "decisions at 1m differ" in out
    lines = [line.strip() for line in out.splitlines()]
    assert "-      Data Lead: 1" in lines  # the approver the rule lacks, marked as removed
    assert "CTO: 1" in lines  # an unchanged line stays context, unmarked
    assert "0 passed, 1 failed" in out


def test_export_prometheusrule_manifest() -> None:
    code, out = run("export", "--format", "prometheusrule", "--namespace", "monitoring", str(SHIPPED))
    assert code == 0
    doc = yaml.safe_load(out)
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert doc["metadata"]["namespace"] == "monitoring"
    [group_] = doc["spec"]["groups"]
    rules = {r["alert"]: r for r in group_["rules"]}
    assert len(rules) == 16
    err = rules["ApplicationErrorRate"]
    assert err["labels"]["rollbackd_rule"] == "ApplicationErrorRate"
    assert err["for"] == "5m"
    assert err["expr"].endswith(") > 0.01")
