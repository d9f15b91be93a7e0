"""Freeze windows in the rule files: when they are in force (time zones, past midnight, one-off dates),
what ``rules check`` says of bad ones, ``rules test --at`` inside and outside them, and ``rules export``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest
from click.testing import CliRunner

from daemon.cli.rules import group
from daemon.model import ActionKind, Decision, Severity
from daemon.rules.freeze import blocking, in_force, with_freeze
from daemon.rules.registry import load_ruleset
from daemon.rules.ruleset import RuleSet
from daemon.target import Target
from tests.fixtures import rules_file, rules_text

from .conftest import BASE


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def decision(namespace: str) -> Decision:
    return Decision(
        rule="freeze-probe", severity=Severity.P1, action=ActionKind.ROLLBACK_NOW, targets=(Target(namespace, "web"),)
    )


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    loaded, errors, _ = load_ruleset([rules_file("freeze", tmp_path)])
    assert errors == []
    assert loaded is not None
    return loaded


@pytest.mark.parametrize(
    ("now", "window", "until"),
    [
        ("2026-03-02T17:30", "weekday-evenings", "2026-03-03T07:00"),  # Monday 18:30 in Berlin (CET)
        ("2026-03-03T06:30", "weekday-evenings", "2026-03-03T07:00"),  # Tuesday 07:30: Monday's, past midnight
        ("2026-03-07T06:30", "weekday-evenings", "2026-03-07T07:00"),  # Saturday 07:30: Friday's evening
        ("2026-03-02T06:30", None, None),  # Monday 07:30: Sunday evening is not frozen
        ("2026-03-07T17:30", None, None),  # Saturday 18:30: not a weekday
        ("2026-07-01T16:30", "weekday-evenings", "2026-07-02T06:00"),  # summer time (CEST): 18:30 local
        ("2026-07-01T15:30", None, None),  # 17:30 local in summer
        ("2026-12-25T12:00", "holidays", "2026-12-26T23:00"),  # the one-off range, Berlin midnight in UTC
    ],
)
def test_windows_are_in_force_in_their_time_zone(
    ruleset: RuleSet, now: str, window: str | None, until: str | None
) -> None:
    hit = blocking(ruleset.freeze_windows, decision("shop"), utc(now))
    assert (hit.window.name, hit.until) == (window, utc(until)) if hit else (window, until) == (None, None)


def test_a_window_covers_only_its_scope(ruleset: RuleSet) -> None:
    monday_evening = utc("2026-03-02T17:30")
    assert blocking(ruleset.freeze_windows, decision("pay"), monday_evening) is None
    assert blocking(ruleset.freeze_windows, decision("pay"), utc("2026-12-24T10:00")) is not None  # holidays: all


def test_require_approval_adds_its_role_while_in_force_and_only_then(ruleset: RuleSet) -> None:
    wednesday = utc("2026-03-04T10:30")
    frozen = with_freeze(decision("pay"), ruleset.freeze_windows, wednesday)
    assert dict(frozen.approval.roles) == {"Engineering Lead": 1}
    assert "freeze window pay-release until 2026-03-04 12:00 UTC needs approval by Engineering Lead" in frozen.reason
    assert blocking(ruleset.freeze_windows, frozen, wednesday) is None  # it asks for approval, it does not block
    assert in_force(ruleset.freeze_windows, frozen, wednesday) is not None
    later = utc("2026-03-04T12:00")
    assert with_freeze(decision("pay"), ruleset.freeze_windows, later) == decision("pay")


BAD = (
    BASE
    + """\
decisions:
  - {name: d, match: ['alertname="X"'], severity: P1, action: rollback_now, approval: {all_of: [CTO]}}
freeze_windows:
  - name: bad-zone
    time_zone: Mars/Olympus
    weekly: [{days: [mon], from: "18:00", to: "20:00"}]
  - name: bad-scope
    scope: cluster:prod
    dates: [{from: 2026-12-24T00:00, to: 2026-12-23T00:00}]
  - name: bad-role
    weekly: [{days: [sun], from: "01:00", to: "02:00"}]
    effect: require_approval
    approval_role: Release Manager
"""
)


def test_rules_check_names_each_bad_window_at_its_field(write: Callable[[str, str], Path]) -> None:
    path = write("bad.yaml", BAD)
    result = CliRunner().invoke(group, ["check", "--no-promtool", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert f"{path}:14:16: freeze_windows[0].time_zone: found 'Mars/Olympus', expected an IANA time zone" in out
    assert "freeze_windows[1].scope: unknown scope 'cluster:prod': expected all, namespace:NS" in out
    assert "freeze_windows[1].dates[0]: ends (2026-12-23 00:00) before it starts (2026-12-24 00:00)" in out
    assert "freeze_windows[2].approval_role: role 'Release Manager' is not declared in any file's roles" in out
    no_times = write("none.yaml", BASE + "freeze_windows:\n  - {name: no-times, effect: block}\n")
    result = CliRunner().invoke(group, ["check", "--no-promtool", str(no_times)])
    assert result.exit_code == 1
    assert f"{no_times}:11:5: freeze_windows[0]: a freeze window needs 'weekly' times or 'dates'" in result.output


TEST_FILE = """\
apiVersion: rollbackd/v1
rule_files: [rules.yaml]
start: 2026-03-02T12:00:00+00:00
tests:
  - name: FreezeProbe during the weekday evening freeze
    alerts: [{at: 1m, name: FreezeProbe, labels: {namespace: shop, deployment: web}}]
    expect:
      - at: 1m
        decisions: [{rule: freeze-probe, freeze: block weekday-evenings, approval: none}]
  - name: in the pay release window an Engineering Lead approves too
    alerts: [{at: 1m, name: FreezeProbe, labels: {namespace: pay, deployment: api}}]
    expect:
      - at: 1m
        decisions: [{rule: freeze-probe, freeze: require_approval pay-release, approval: {all_of: [Engineering Lead]}}]
"""


def test_rules_test_at_a_time_inside_and_outside_a_window(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(rules_text("freeze"))
    test = tmp_path / "freeze.test.yaml"
    test.write_text(TEST_FILE)
    inside = CliRunner().invoke(group, ["test", "--at", "2026-03-02T18:30:00+01:00", str(test)])
    assert "PASS" in inside.output
    assert "1 passed, 1 failed" in inside.output  # Monday evening: blocked, and no pay release window
    wednesday = CliRunner().invoke(group, ["test", "--at", "2026-03-04T10:30", str(test)])
    assert "1 passed, 1 failed" in wednesday.output  # Wednesday morning: the pay window, no evening freeze
    assert "-  freeze: block weekday-evenings" in wednesday.output
    assert "+  freeze: none" in wednesday.output
    assert "-  freeze: require_approval pay-release" in inside.output
    bad = CliRunner().invoke(group, ["test", "--at", "next tuesday", str(test)])
    assert bad.exit_code == 2
    assert "'next tuesday': expected an ISO 8601 time" in bad.output


def test_rules_export_emits_nothing_for_freeze_windows(tmp_path: Path) -> None:
    text = rules_text("freeze")
    with_windows, without = tmp_path / "with.yaml", tmp_path / "without.yaml"
    with_windows.write_text(
        text + "thresholds:\n  - {name: Slow, component: A, metric: m, expr: 'x', comparator: '>', threshold: 1,"
        " severity: P1}\n"
    )
    without.write_text(with_windows.read_text().split("freeze_windows:")[0] + with_windows.read_text().split(
        "    approval_role: Engineering Lead\n")[1])  # fmt: skip
    exported = [CliRunner().invoke(group, ["export", str(p)]) for p in (with_windows, without)]
    assert [r.exit_code for r in exported] == [0, 0]
    assert "Slow" in exported[0].output
    assert exported[0].output == exported[1].output


def test_a_window_outside_rollbacks_changes_nothing(ruleset: RuleSet) -> None:
    notify = Decision(rule="n", severity=Severity.P3, action=ActionKind.NOTIFY, targets=(Target("pay", "api"),))
    assert with_freeze(notify, ruleset.freeze_windows, utc("2026-03-04T10:30")) == notify
    assert MappingProxyType({}) == notify.approval.roles
