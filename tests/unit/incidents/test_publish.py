"""Decision and action events: queued on the outbox's kafka channel by the transactions that made them.

A real store (``--store=both``), fake time, the recording executor of ``conftest``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import select

from daemon.clock import FakeClock
from daemon.errors import PermanentError
from daemon.incidents.service import IncidentService
from daemon.model import RollbackOutcome, RollbackRequest, Target
from daemon.sources.decision_events import SCHEMA
from daemon.sources.deploy_events import validate
from daemon.store.db import Store
from daemon.store.tables import OutboxRow
from tests.unit.incidents.conftest import MANUAL_QUORUM
from tests.unit.incidents.test_service import CTO_AND_DATA, WEB, alert, decision

API = Target("shop", "api")


async def published(store: Store, incident_id: str | None = None) -> list[dict[str, Any]]:
    """The kafka rows' events, in delivery (id) order; each must be a valid decision-event.v1."""
    query = select(OutboxRow).where(OutboxRow.channel == "kafka").order_by(OutboxRow.id)
    if incident_id is not None:
        query = query.where(OutboxRow.incident_id == incident_id)
    async with store.transaction() as s:
        rows = list((await s.scalars(query)).all())
    for row in rows:
        validate(SCHEMA, row.payload, "queued event")
        assert row.kind == row.payload["type"]
    return [dict(r.payload) for r in rows]


class BrokenExecutor:
    """Implements the Executor protocol: the rollback ends in an error before any target reports."""

    async def execute(self, req: RollbackRequest) -> RollbackOutcome:
        raise PermanentError("apiserver refused the patch: forbidden", reason="forbidden")


async def test_an_automatic_rollback_publishes_its_decision_then_one_action_per_target(
    make_service: Callable[..., IncidentService], store: Store
) -> None:
    service = make_service(publish_as="rollbackd-0")
    two_targets = replace(decision(), targets=(WEB, API))
    view = await service.on_decision(two_targets, alert())
    await service.idle()
    assert (await service.get(view.id)).state == "resolved"
    events = await published(store, view.id)
    assert [e["type"] for e in events] == ["decision", "action", "action"]
    assert {e["incident_id"] for e in events} == {view.id}
    assert {e["instance"] for e in events} == {"rollbackd-0"}
    assert len({e["event_id"] for e in events}) == 3
    assert events[0]["decision"]["rule"] == "data-corruption"
    assert events[0]["decision"]["targets"] == ["shop/web", "shop/api"]
    actions = [e["action"] for e in events[1:]]
    assert [a["target"] for a in actions] == ["shop/web", "shop/api"]
    assert {(a["name"], a["result"], a["from_revision"], a["to_revision"], a["automatic"]) for a in actions} == {
        ("rollback", "rolled_back", 5, 4, True)
    }


async def test_a_join_publishes_its_own_decision_and_a_closed_incident_publishes_nothing_more(
    make_service: Callable[..., IncidentService], store: Store
) -> None:
    service = make_service(publish_as="rollbackd-0")
    d = decision(CTO_AND_DATA)  # waits for approval: no action yet
    one = await service.on_decision(d, alert("fp1"))
    two = await service.on_decision(d, alert("fp2"))
    assert one.id == two.id
    assert [e["type"] for e in await published(store, one.id)] == ["decision", "decision"]
    await service.resolve(one.id, "sre1", "false alarm")
    fresh = await service.on_decision(d, alert("fp3"))  # the group's incident is closed: a new one opens
    assert fresh.id != one.id
    assert [e["type"] for e in await published(store, one.id)] == ["decision", "decision"]
    assert [e["type"] for e in await published(store, fresh.id)] == ["decision"]


async def test_a_rollback_that_errors_publishes_a_failed_action_per_target(store: Store, clock: FakeClock) -> None:
    service = IncidentService(
        store, clock, [], BrokenExecutor(), manual_rollback=lambda: MANUAL_QUORUM, publish_as="rollbackd-0"
    )
    try:
        view = await service.on_decision(decision(), alert())
        await service.idle()
        assert (await service.get(view.id)).state == "failed"
    finally:
        await service.close()
    (_, action) = await published(store, view.id)
    assert action["action"]["target"] == "shop/web"
    assert action["action"]["result"] == "failed"
    assert "forbidden" in action["action"]["detail"]


async def test_nothing_is_queued_for_kafka_when_publishing_is_off(service: IncidentService, store: Store) -> None:
    view = await service.on_decision(decision(), alert())
    await service.idle()
    assert (await service.get(view.id)).state == "resolved"
    assert await published(store) == []
