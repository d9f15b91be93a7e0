"""The incident list reads a page in a fixed number of queries and returns the records one-by-one reads build.

Incidents in every shape the record has (verdicts, timers, several alerts, a finished rollback with
its verification, an acknowledgement, a closed one) are made through the real ``IncidentService``;
``--store=postgres`` runs the same on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy import event, select

from daemon.clock import FakeClock
from daemon.incidents import repo
from daemon.incidents.events import TimerKind, VerificationPassed
from daemon.incidents.read import build_record
from daemon.incidents.record import IncidentRecord, Verification
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
from daemon.redact import redact
from daemon.store.db import Store
from daemon.store.tables import OutboxRow, TimerRow
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


async def _listed_as_built(service: IncidentService, store: Store) -> dict[str, IncidentRecord]:
    """The list, checked against the one builder run for each of its incidents, and against its own JSON."""
    listed = await service.list(limit=1000)
    async with store.transaction() as s:
        built = [await build_record(s, r.id, with_timeline=False) for r in listed]
    assert listed == built
    assert [r.to_json() for r in listed] == [r.to_json() for r in built]
    assert [orjson.loads(r.json_bytes()) for r in listed] == [r.to_json() for r in built]
    return {r.id: r for r in listed}


async def _notified(store: Store, incident_id: str) -> dict[str, Any] | None:
    """The record the incident's newest notification carries, as the writer put it into the outbox."""
    async with store.transaction() as s:
        stmt = select(OutboxRow.payload).where(OutboxRow.incident_id == incident_id, OutboxRow.channel == "slack")
        payload = (await s.scalars(stmt.order_by(OutboxRow.id.desc()).limit(1))).first()
    return None if payload is None else dict(payload["incident"])


async def test_after_every_change_the_list_gives_what_the_one_builder_and_the_writer_give(
    service: IncidentService, store: Store, approver_secrets: Secrets, clock: FakeClock
) -> None:
    """The list reads plain rows and keeps the records it built; a change to any row of an incident shows.

    After each change: every listed record equals ``build_record`` for it, and the changed incident's
    newest notification carries exactly that record (with its timeline), as the writer built it inside
    the transaction that changed it. An incident nobody changed is handed back as the same record.
    """
    ids = await _incidents(service, approver_secrets, clock, 10)  # shapes 0-4, twice
    totp = approver_secrets.totp
    before = await _listed_as_built(service, store)
    assert all(r is before[i] for i, r in (await _listed_as_built(service, store)).items())

    async def quorum() -> None:  # the second role approves: the rollback runs and is verified
        await service.approve(ids[5], "dan", totp["dan"].at(clock.now()), via="slack", comment="go")
        await service.idle()

    async def joined() -> None:  # another alert joins an acknowledged incident
        await service.on_decision(
            _decision(Target("shop", "web-7"), ActionKind.NOTIFY), _alert(Target("shop", "web-7"), "c7")
        )

    async def deadlines() -> None:  # the approval deadline and the escalations come due and fire
        await clock.advance(3600)
        await service.fire_due()

    # (the incident that changes, whether the change notifies, the change)
    changes: list[tuple[str, bool, Callable[[], Awaitable[Any]]]] = [
        (ids[5], True, quorum),
        (ids[9], True, lambda: service.acknowledge(ids[9], "oncall", via="slack")),
        (ids[7], False, joined),  # a join changes nothing a notification reports: none is sent
        (ids[0], True, lambda: service.reject(ids[0], "dan", totp["dan"].at(clock.now()), via="api", comment="no")),
        (ids[4], True, deadlines),
        (ids[2], True, lambda: service.resolve(ids[2], "oncall", "fixed by hand")),
    ]
    for changed, notifies, change in changes:
        await clock.advance(31)  # a fresh TOTP step for each verdict
        await change()
        after = await _listed_as_built(service, store)
        assert after[changed] != before[changed], changed
        if notifies:
            assert await _notified(store, changed) == redact((await service.get(changed)).to_json()), changed
        assert all(after[i] is before[i] for i in ids if after[i] == before[i])
        before = after


async def test_a_change_to_a_child_row_alone_shows_in_the_next_list(
    service: IncidentService, store: Store, approver_secrets: Secrets, clock: FakeClock
) -> None:
    """The memo keys on every row a record is built from, not on the incident row (whose version a timer
    claimed for an event its state ignores does not move): each row the writer's repository writes shows."""
    ids = await _incidents(service, approver_secrets, clock, 1)  # awaiting two roles, timers armed
    before = (await _listed_as_built(service, store))[ids[0]]
    pending = [t for t in before.timers if t.status == "pending"]
    assert len(pending) >= 2
    async with store.transaction() as s:
        (timer_id,) = (
            await s.scalars(select(TimerRow.id).where(TimerRow.incident_id == ids[0], TimerRow.kind == pending[0].kind))
        ).all()
        assert await repo.claim_timer(s, timer_id, clock.now())
    claimed = (await _listed_as_built(service, store))[ids[0]]
    assert claimed.timer(pending[0].kind) == replace(pending[0], status="fired")
    async with store.transaction() as s:
        await repo.cancel_timer(s, ids[0], TimerKind(pending[1].kind))
    cancelled = (await _listed_as_built(service, store))[ids[0]]
    assert cancelled.timer(pending[1].kind) == replace(pending[1], status="cancelled")
    async with store.transaction() as s:
        detail = {"verification": "error rate back under 1%"}
        repo.add_audit(s, ids[0], at=clock.now(), actor="verifier", action=VerificationPassed.name, detail=detail)
    verified = (await _listed_as_built(service, store))[ids[0]]
    assert verified.verification == Verification(True, "error rate back under 1%", clock.now())
    assert (await service.list(limit=1000))[0] is verified  # built once per change, not once per read


async def test_a_replica_lists_what_another_replica_changed(
    make_service: Callable[..., IncidentService], store: Store, approver_secrets: Secrets, clock: FakeClock
) -> None:
    """Each replica keeps its own records; a change the other replica commits is in the rows, so it shows."""
    first, second = make_service(), make_service()
    ids = await _incidents(first, approver_secrets, clock, 5)
    seen = {r.id: r for r in await second.list(limit=1000)}
    await first.acknowledge(ids[0], "oncall", via="slack")
    await first.on_decision(
        _decision(Target("shop", "web-4"), ActionKind.NOTIFY), _alert(Target("shop", "web-4"), "c4")
    )
    now = {r.id: r for r in await second.list(limit=1000)}
    assert now == {r.id: r for r in await first.list(limit=1000)} == await _listed_as_built(first, store)
    assert now[ids[0]].acknowledged_by == "oncall" != seen[ids[0]].acknowledged_by
    assert [a.fingerprint for a in now[ids[4]].alerts] == ["a4", "c4"]
    assert all(now[i] is seen[i] for i in ids if i not in (ids[0], ids[4]))
