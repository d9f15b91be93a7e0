"""Hot reload: a broken file keeps the running rules, reports why, and sets the metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemon import metrics
from daemon.clock import FakeClock
from daemon.deploys import DeployHistory
from daemon.model import ActionKind
from daemon.rules import RuleRegistry

from .conftest import BASE, alert

V1 = (
    BASE
    + """\
decisions:
  - {name: down, match: ['alertname="Down"'], severity: P0, action: rollback_now, approval: {all_of: [CTO]}}
"""
)
V2 = (
    BASE
    + """\
decisions:
  - {name: down, match: ['alertname="Down"'], severity: P1, action: pause}
"""
)


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_failed_reload_keeps_the_old_decision_then_a_good_one_swaps(
    write: Callable[[str, str], Path], clock: FakeClock
) -> None:
    path = write("rules.yaml", V1)
    registry = RuleRegistry([path], clock)
    registry.load()
    assert sample("rollbackd_rules_last_reload_success") == 1

    path.write_text(V1.replace("severity: P0", "severity: P7"))
    await clock.advance(60)
    result = registry.reload()
    assert not result.ok
    assert result.at == clock.now()
    assert "decisions[0].severity: found 'P7'" in result.errors[0]
    assert registry.last_error is not None
    assert f"{path}:11:" in registry.last_error
    assert sample("rollbackd_rules_last_reload_success") == 0
    assert sample("rollbackd_rules_last_reload_timestamp_seconds") == clock.now().timestamp()
    [d] = registry.current.evaluate(alert("Down"), DeployHistory())
    assert (d.rule, d.action) == ("down", ActionKind.ROLLBACK_NOW)

    path.write_text(V2)
    assert registry.reload().ok
    assert registry.last_error is None
    assert sample("rollbackd_rules_last_reload_success") == 1
    assert sample("rollbackd_rules_loaded", kind="decision") == 1
    [d] = registry.current.evaluate(alert("Down"), DeployHistory())
    assert d.action is ActionKind.PAUSE


def test_a_file_removed_from_the_folder_is_an_error_not_an_empty_set(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "rules.yaml").write_text(V1)
    registry = RuleRegistry([tmp_path], clock)
    registry.load()
    (tmp_path / "rules.yaml").unlink()
    result = registry.reload()
    assert not result.ok
    assert "no rule files found" in result.errors[0]
    assert registry.current.rule_count == 1
