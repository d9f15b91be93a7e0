"""The rule field ``forced_rollback``: checked by ``rules check``, carried by the decision, off by default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemon.deploys import DeployHistory
from daemon.model import Decision
from daemon.rules import load_ruleset
from daemon.rules.ruleset import RuleSet

from .conftest import BASE, alert

RULE = """\
decisions:
  - name: ledger-down
    match: ['alertname="LedgerDown"']
    severity: P0
    action: {action}
    approval: {{any_of: [CTO]}}
{extra}"""


def _load(
    write: Callable[[str, str], Path], extra: str, action: str = "rollback_now"
) -> tuple[RuleSet | None, list[str]]:
    rs, errors, _ = load_ruleset([write("r.yaml", BASE + RULE.format(action=action, extra=extra))])
    return rs, [str(e) for e in errors]


def test_a_rule_allows_forced_rollback_after_a_wait_and_the_decision_carries_it(
    write: Callable[[str, str], Path],
) -> None:
    rs, errors = _load(write, "    forced_rollback: {after: 45s}\n")
    assert rs is not None, errors
    [d] = rs.evaluate(alert("LedgerDown", 1, namespace="prod", statefulset="ledger"), DeployHistory())
    assert d.forced_rollback_after_s == 45.0
    assert d.to_json()["forced_rollback"] == {"after_s": 45.0}
    assert Decision.from_json(d.to_json()) == d


def test_the_default_wait_and_no_forced_rollback_without_the_field(write: Callable[[str, str], Path]) -> None:
    rs, errors = _load(write, "    forced_rollback: {}\n")
    assert rs is not None, errors
    [d] = rs.evaluate(alert("LedgerDown", 1, namespace="prod", statefulset="ledger"), DeployHistory())
    assert d.forced_rollback_after_s == 180.0  # a few minutes
    rs, errors = _load(write, "")
    assert rs is not None, errors
    [d] = rs.evaluate(alert("LedgerDown", 1, namespace="prod", statefulset="ledger"), DeployHistory())
    assert d.forced_rollback_after_s is None
    assert "forced_rollback" not in d.to_json()  # records written before the field read the same


def test_rules_check_names_a_wait_out_of_bounds_and_a_rule_that_does_not_roll_back(
    write: Callable[[str, str], Path],
) -> None:
    _, errors = _load(write, "    forced_rollback: {after: 0s}\n")
    assert any("decisions[0].forced_rollback.after" in e and "expected a wait from 1s to 30m" in e for e in errors)
    _, errors = _load(write, "    forced_rollback: {after: 2h}\n")
    assert any("expected a wait from 1s to 30m" in e for e in errors), errors
    _, errors = _load(write, "    forced_rollback: {after: 2m}\n", action="notify")
    assert any("'forced_rollback' applies to rollbacks only, not notify" in e for e in errors), errors
    _, errors = _load(write, "    forced_rollback: {wait: 2m}\n")
    assert any("forced_rollback.wait" in e for e in errors), errors


def test_break_glass_may_allow_it_in_manual_rollback(write: Callable[[str, str], Path]) -> None:
    text = BASE + "manual_rollback:\n  approval: {any_of: [CTO]}\n  forced_rollback: {after: 1m}\n"
    rs, errors, _ = load_ruleset([write("m.yaml", text)])
    assert rs is not None, errors
    assert rs.manual_rollback_spec is not None
    assert rs.manual_rollback_spec.forced_rollback_after_s == 60.0
