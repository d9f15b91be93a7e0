"""Skipping the deploy-history read: only when no rule that may match correlates; never changing a decision."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from daemon.deploys import DeployHistory
from daemon.model import AlertStatus
from daemon.rules import RuleSet, load_ruleset

from .helpers import alert, deploy

SHIPPED = Path(__file__).resolve().parents[3] / "rules"


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    ruleset, errors, _ = load_ruleset(sorted(SHIPPED.glob("*.yaml")))
    assert ruleset is not None, errors
    return ruleset


# Shipped rules (seed 4.1): these correlate with deployments; the others never read the history.
CORRELATING = ["ApplicationErrorRate", "PerformanceDegradation", "ServiceDown", "DataCorruptionDetected"]


@pytest.mark.parametrize("name", CORRELATING)
def test_alerts_of_correlating_rules_read_the_history(shipped: RuleSet, name: str) -> None:
    assert shipped.needs_history(alert(name))


@pytest.mark.parametrize("name", ["BenchHighErrorRate", "SomethingNoRuleKnows"])
def test_alerts_no_correlating_rule_matches_skip_the_read(shipped: RuleSet, name: str) -> None:
    assert not shipped.needs_history(alert(name))


def test_resolved_alerts_skip_the_read(shipped: RuleSet) -> None:
    assert not shipped.needs_history(alert("ApplicationErrorRate", status=AlertStatus.RESOLVED))


def test_a_rule_set_without_correlation_never_reads_it() -> None:
    assert not RuleSet().needs_history(alert("ApplicationErrorRate"))


@pytest.mark.parametrize("name", [*CORRELATING, "BenchHighErrorRate", "CriticalSecurityVulnerability", "Other"])
def test_skipping_never_changes_a_decision(shipped: RuleSet, name: str) -> None:
    """Whenever the read is skipped, evaluating with the real history decides exactly the same."""
    fired = replace(alert(name, starts_min=10, severity="critical", service="shop-web"), value=0.12)
    history = DeployHistory((deploy("e2", minutes=5), deploy("e1", minutes=-60)))
    if shipped.needs_history(fired):
        return  # evaluated with the history: nothing to compare
    assert shipped.evaluate(fired, history) == shipped.evaluate(fired, DeployHistory())


def test_the_skip_would_matter_for_a_correlating_rule(shipped: RuleSet) -> None:
    """The comparison above can fail: a correlating rule decides differently without the history."""
    fired = replace(alert("ApplicationErrorRate", starts_min=10, service="shop-web"), value=0.12)
    history = DeployHistory((deploy("e2", minutes=5),))
    assert shipped.needs_history(fired)
    assert shipped.evaluate(fired, history) != shipped.evaluate(fired, DeployHistory())
    (with_history,) = shipped.evaluate(fired, history)
    assert with_history.rule == "error-rate-above-5-percent"
    assert with_history.deploy == history.events[0]
