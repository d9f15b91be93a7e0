"""A block freeze window holds an automated rollback at a time inside it and not outside it (fake clock),
on a real store (``--store=both``), through the incident service and the automation guard."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.clock import FakeClock
from daemon.control.guard import AutomationGuard, freeze_check
from daemon.control.pauses import Pauses
from daemon.incidents.service import IncidentService
from daemon.model import ActionKind, AlertStatus, Decision, Severity, Target
from daemon.rules.registry import load_ruleset
from daemon.store.db import Store
from tests.fixtures import rules_file
from tests.unit.control.test_guard import DryRunAwareExecutor, alert, executor

__all__ = ["executor"]  # the fixture

SHOP_WEB = Target("shop", "web")
MONDAY_EVENING = datetime(2026, 3, 2, 17, 30, tzinfo=UTC)  # 18:30 in Berlin: weekday-evenings is in force


async def test_a_block_window_holds_inside_and_lets_the_rollback_run_outside(
    executor: DryRunAwareExecutor, store: Store, tmp_path: Path
) -> None:
    ruleset, errors, _ = load_ruleset([rules_file("freeze", tmp_path)])
    assert ruleset is not None, errors
    clock = FakeClock(MONDAY_EVENING)
    guard = AutomationGuard(store, clock, Pauses(store, clock), freeze=freeze_check(lambda: ruleset.freeze_windows))
    # Its own clock: the fixture's service runs on another one, and the window is about this one.
    service = IncidentService(store, clock, [], executor, manual_rollback=lambda: ruleset.manual_rollback, guard=guard)
    decision = Decision(rule="freeze-probe", severity=Severity.P1, action=ActionKind.ROLLBACK_NOW, targets=(SHOP_WEB,))
    try:
        inside = await service.on_decision(decision, alert("fp1"))
        await service.idle()
        held = await service.get(inside.id)
        assert held.state == "escalated"
        why = next(t for t in held.timeline if t.action == "rollback_held").detail["why"]
        assert why.startswith(
            "would roll back shop/web revision 5 → 4: freeze window weekday-evenings (on-call is thin) "
            "until 2026-03-03 07:00 UTC"
        ), why
        assert [r.dry_run for r in executor.requests] == [True]
        await service.on_alert_resolved(alert("fp1", AlertStatus.RESOLVED))

        await clock.advance(13.5 * 3600)  # Tuesday 07:00 UTC = 08:00 in Berlin: the window has ended
        outside = await service.on_decision(decision, alert("fp2"))
        await service.idle()
        assert (await service.get(outside.id)).state == "resolved"
        assert [r.dry_run for r in executor.requests] == [True, None]
    finally:
        await service.close()
