"""Deployment history: idempotent on the event id, newest first, scoped to the target or service."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from daemon.ingest import DeployHistoryStore
from daemon.model import Target
from daemon.store.db import Store
from daemon.target import WorkloadKind

from .helpers import T0, deploy


async def test_snapshot_is_newest_first_and_redeliveries_are_ignored(store: Store) -> None:
    history = DeployHistoryStore(store)
    assert await history.record(deploy("a", minutes=0))
    assert await history.record(deploy("b", minutes=10))
    assert not await history.record(deploy("b", minutes=10))
    assert await history.record(deploy("other", minutes=5, deployment="api", service="shop-api"))
    snap = await history.snapshot([Target("shop", "web")], None, T0)
    assert [e.event_id for e in snap.events] == ["b", "a"]
    assert snap.events[0].at == T0 + timedelta(minutes=10)
    assert snap.events[0].migration is True
    assert snap.events[0].revision == 3


async def test_snapshot_by_service_and_since(store: Store) -> None:
    history = DeployHistoryStore(store)
    await history.record(deploy("old", minutes=0))
    await history.record(deploy("new", minutes=30))
    await history.record(deploy("api", minutes=40, deployment="api", service="shop-api"))
    snap = await history.snapshot([], "shop-web", T0 + timedelta(minutes=15))
    assert [e.event_id for e in snap.events] == ["new"]
    assert snap.latest_for(service="shop-web") is not None
    assert (await history.snapshot([], None, T0)).events == ()


async def test_a_statefulset_and_a_deployment_of_one_name_have_their_own_history(store: Store) -> None:
    history = DeployHistoryStore(store)
    await history.record(deploy("dep", minutes=0))
    await history.record(replace(deploy("sts", minutes=5), workload_kind=WorkloadKind.STATEFULSET))
    snap = await history.snapshot([Target("shop", "web", WorkloadKind.STATEFULSET)], None, T0)
    assert [(e.event_id, e.target) for e in snap.events] == [("sts", Target("shop", "web", WorkloadKind.STATEFULSET))]
    assert [e.event_id for e in (await history.snapshot([Target("shop", "web")], None, T0)).events] == ["dep"]
