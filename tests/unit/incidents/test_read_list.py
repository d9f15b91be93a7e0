"""The incident list reads a page in a fixed number of queries and returns the records one-by-one reads build.

Incidents in every shape the record has (verdicts, timers, several alerts, a finished rollback with
its verification, an acknowledgement, a closed one) are made through the real ``IncidentService``;
``--store=postgres`` runs the same on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import event

from daemon.clock import FakeClock
from daemon.incidents.record import IncidentRecord
from daemon.incidents.service import IncidentService
from daemon.model import (
    ActionKind,
    Alert,
    AlertStatus,
    ApprovalRequirement,
    Decision,
    OnDeadline,
    QuorumMode,
    Severity,
    Target,
)
from daemon.store.db import Store
from tests.unit.incidents.conftest import FakeExecutor, Secrets


def _alert(target: Target, fp: str, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(
        name="ErrorRate",
        status=status,
        labels=MappingProxyType({"namespace": target.namespace, "deployment": target.name}),
        annotations=MappingProxyType({"summary": f"errors on {target.name}"}),
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
        fingerprint=fp,
        source="alertmanager",
        target=target,
        value=0.2,
    )


def _decision(target: Target, action: ActionKind, roles: dict[str, int] | None = None) -> Decision:
    return Decision(
        rule=f"errors-{action.value}",
        severity=Severity.P1,
        action=action,
        targets=(target,),
        approval=ApprovalRequirement(MappingProxyType(roles or {}), QuorumMode.ALL_OF, 600, OnDeadline.ESCALATE),
        rollback_time_objective_s=900,
        reason="error rate 20%",
        channels=("#incidents",),
        measured=MappingProxyType({"value": 0.2}),
    )


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)


async def _incidents(service: IncidentService, secrets: Secrets, clock: FakeClock, n: int) -> list[str]:
    """``n`` incidents through the service, cycling through the shapes a record can take."""
    ids: list[str] = []
    for i in range(n):
        target = Target("shop", f"web-{i}")
        shape = i % 5
        if shape == 0:  # awaiting two roles, one verdict in, timers armed, two alerts
            quorum = _decision(target, ActionKind.ROLLBACK_NOW, {"cto": 1, "data-lead": 1})
            view = await service.on_decision(quorum, _alert(target, f"a{i}"))
            await service.on_decision(quorum, _alert(target, f"b{i}"))
            await service.approve(view.id, "ana", secrets.totp["ana"].at(clock.now()), via="cli")
        elif shape == 1:  # rolled back without approval: actions and verification in the record
            view = await service.on_decision(_decision(target, ActionKind.ROLLBACK_NOW), _alert(target, f"a{i}"))
            await service.idle()
        elif shape == 2:  # notify, acknowledged
            view = await service.on_decision(_decision(target, ActionKind.NOTIFY), _alert(target, f"a{i}"))
            await service.acknowledge(view.id, "oncall", via="cli")
        elif shape == 3:  # notify, closed by its alert's resolution
            view = await service.on_decision(_decision(target, ActionKind.NOTIFY), _alert(target, f"a{i}"))
            await service.on_alert_resolved(_alert(target, f"a{i}", AlertStatus.RESOLVED))
        else:  # plain notify
            view = await service.on_decision(_decision(target, ActionKind.NOTIFY), _alert(target, f"a{i}"))
        ids.append(view.id)
        await clock.advance(31)  # distinct creation times (the list's order), and a fresh TOTP step
    return ids


def _listed(record: IncidentRecord) -> IncidentRecord:
    """What a list entry carries of a record: everything but the timeline."""
    return replace(record, timeline=())


async def test_the_list_equals_one_by_one_reads_in_a_fixed_number_of_queries(
    service: IncidentService, store: Store, approver_secrets: Secrets, clock: FakeClock, executor: FakeExecutor
) -> None:
    ids = await _incidents(service, approver_secrets, clock, 25)
    singles = {i: _listed(await service.get(i)) for i in ids}
    assert any(r.actions and r.verification for r in singles.values())
    assert any(r.approvals and r.timers and len(r.alerts) == 2 for r in singles.values())
    assert any(not r.open for r in singles.values())

    with _statements(store) as small:
        few = await service.list(limit=5)
    with _statements(store) as large:
        listed = await service.list(limit=1000)

    assert [r.id for r in listed] == list(reversed(ids))  # newest first
    assert [r.id for r in few] == list(reversed(ids))[:5]
    assert {r.id: r for r in listed} == singles
    assert len(large) == len(small) <= 6  # the ids, the incidents, alerts, verdicts, timers, audit

    open_ids = [r.id for r in await service.list(open_only=True, limit=1000)]
    assert open_ids == [r.id for r in listed if r.open]
    assert len(open_ids) < len(ids)
    assert len(executor.requests) == sum(1 for i in range(25) if i % 5 == 1)
