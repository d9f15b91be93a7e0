"""Two replicas, one effect: every alert sent to both replicas of rollbackd on one PostgreSQL.

Alertmanager in HA sends each alert to every receiver it knows, so both
replicas get all of them. Per round: 2,000 distinct firing alerts in 200 groups
(10 alerts per Deployment), each POSTed to both replicas over 16 concurrent
connections per replica, five alerts per webhook in a shuffled order. Five of
the groups name real Deployments under a rule that rolls back at once; the
others notify. Three rounds.

After each round: no inbox row is left unprocessed (a dispatcher that reads
"ids after the last one seen" skips rows whose transaction committed late),
exactly one incident per group, every alert decided exactly once (the
decision counters of both replicas add up to 2,000 and every alert joined its
incident once), and every Deployment of a rollback group rolled back exactly
once (one intent, revision 2 → 3).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from daemon.incidents.events import Decided
from daemon.store.db import Store
from daemon.store.tables import AuditRow, InboxRow, IncidentAlertRow, IncidentRow, RollbackIntentRow
from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.fixtures import rules_file
from tests.kube_util import deploy_with_history, revision
from tests.replicas import metric, replica_pair, wait_for_leader
from tests.stack.kube import KubeCluster
from tests.stack.postgres import Postgres
from tests.webhooks import firing_alert, webhook_bodies

pytestmark = [pytest.mark.fault, pytest.mark.integration]

ROUNDS = 3
GROUPS = 200
PER_GROUP = 10
ROLLBACK_GROUPS = 5
PER_WEBHOOK = 5
CONNECTIONS = 16
SETTLE_S = 90.0

async def _post_all(replica: DaemonProcess, bodies: list[bytes]) -> Counter[int | str]:
    """Every body to ``replica`` over ``CONNECTIONS`` connections; the status codes seen."""
    statuses: Counter[int | str] = Counter()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=replica.url, headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                for _ in range(20):  # Alertmanager retries a 503 and a dropped connection; so do we, boundedly
                    try:
                        resp = await client.post("/webhooks/alertmanager", content=body)
                    except httpx.TransportError as exc:
                        # A keep-alive connection the server closed as the request went out: resent, as
                        # Alertmanager does; the inbox's dedupe makes a resend of a written body harmless.
                        statuses[f"resent after {type(exc).__name__}"] += 1
                        await asyncio.sleep(0.2)
                        continue
                    statuses[resp.status_code] += 1
                    if resp.status_code != 503:
                        break
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return statuses


async def _unprocessed(store: Store) -> int:
    async with store.transaction() as s:
        return int((await s.execute(select(func.count()).where(InboxRow.processed_at.is_(None)))).scalar_one())


async def _settle(store: Store, within_s: float) -> float:
    """Seconds until no inbox row is left unprocessed; fails with the count after ``within_s``."""
    start = time.monotonic()
    while (left := await _unprocessed(store)) > 0:
        if time.monotonic() - start > within_s:
            raise AssertionError(f"{left} inbox rows still unprocessed after {within_s:.0f} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - start


async def _round_facts(store: Store, run: str) -> dict[str, object]:
    async with store.transaction() as s:
        incidents = (
            await s.execute(select(IncidentRow.id, IncidentRow.group_key).where(IncidentRow.group_key.contains(run)))
        ).all()
        ids = [i for i, _ in incidents]
        joined = (
            await s.execute(select(IncidentAlertRow.fingerprint).where(IncidentAlertRow.incident_id.in_(ids)))
        ).scalars().all()
        decided = (
            await s.execute(
                select(AuditRow.incident_id, func.count())
                .where(AuditRow.incident_id.in_(ids), AuditRow.action == Decided.name)
                .group_by(AuditRow.incident_id)
            )
        ).all()
        intents = (
            await s.execute(
                select(RollbackIntentRow.incident_id, func.count())
                .where(RollbackIntentRow.incident_id.in_(ids), RollbackIntentRow.dry_run.is_(False))
                .group_by(RollbackIntentRow.incident_id)
            )
        ).all()
    return {
        "incidents_per_group": Counter(Counter(g for _, g in incidents).values()),
        "groups": len({g for _, g in incidents}),
        "joined": len(joined),
        "joined_distinct": len(set(joined)),
        "decided_per_incident": Counter(n for _, n in decided),
        "intents_per_incident": Counter(n for _, n in intents),
        "incidents_with_intents": len(intents),
    }


async def _run_rounds(
    pair: tuple[DaemonProcess, DaemonProcess], store: Store, kube: KubeCluster, namespace: str, names: list[str]
) -> list[str]:
    rng = random.Random(12)
    report = []
    for round_no in range(ROUNDS):
        run = f"r{round_no}-{uuid.uuid4().hex[:6]}"
        rollback, notify = [], []
        for g in range(GROUPS):
            if g < ROLLBACK_GROUPS:
                # The approval deadline (45 s, then proceed) keeps the incident open while its alerts
                # arrive; the timer that fires it runs on the leader, whichever replica that is.
                deployment = names[round_no * ROLLBACK_GROUPS + g]
                rollback += [
                    firing_alert("TwoReplicaRollback", namespace, deployment, i, run) for i in range(PER_GROUP)
                ]
            else:
                # The run id in the target's namespace keeps each round's groups new.
                target_ns = f"{namespace}-{run}"
                notify += [firing_alert("TwoReplicaNotify", target_ns, f"svc-{g}", i, run) for i in range(PER_GROUP)]
        # Shuffled: a storm of many groups. The rollback groups' alerts are shuffled into the first
        # fifth of it, so all ten reach their incident before its 45 s deadline rolls back and closes
        # it even when a loaded machine takes a minute over the round; a late alert would rightly
        # open a second incident for the rolled-back Deployment.
        head = len(notify) // 5
        bodies = webhook_bodies(rollback + notify[:head], rng, per_webhook=PER_WEBHOOK)
        bodies += webhook_bodies(notify[head:], rng, per_webhook=PER_WEBHOOK)
        before = sum(metric(d, "rollbackd_decisions_total") for d in pair)
        started = time.monotonic()
        statuses = await asyncio.gather(*(_post_all(d, bodies) for d in pair))
        posted = time.monotonic() - started
        settled = await _settle(store, SETTLE_S)
        decided = sum(metric(d, "rollbackd_decisions_total") for d in pair) - before
        rollback_names = names[round_no * ROLLBACK_GROUPS : (round_no + 1) * ROLLBACK_GROUPS]
        revisions = await _rolled_back(kube, namespace, rollback_names)
        facts = await _facts_for(store, namespace, run, rollback_names)
        report.append(
            f"round {round_no}: posted {len(bodies)}x2 webhooks in {posted:.1f} s ({dict(sum(statuses, Counter()))}),"
            f" settled {settled:.1f} s later, decisions {decided:.0f}, {facts}, revisions {revisions}"
        )
        assert all({c for c in s if isinstance(c, int)} <= {200, 503} for s in statuses), report[-1]
        assert all(s[200] == len(bodies) for s in statuses), report[-1]  # every body answered 200 in the end
        assert decided == GROUPS * PER_GROUP, report[-1]
        assert facts["groups"] == GROUPS, report[-1]
        assert facts["incidents_per_group"] == {1: GROUPS}, report[-1]
        assert facts["joined"] == facts["joined_distinct"] == GROUPS * PER_GROUP, report[-1]
        assert facts["decided_per_incident"] == {PER_GROUP: GROUPS}, report[-1]
        assert facts["intents_per_incident"] == {1: ROLLBACK_GROUPS}, report[-1]
        assert revisions == [3] * ROLLBACK_GROUPS, report[-1]
    return report


async def _rolled_back(kube: KubeCluster, namespace: str, names: list[str], within_s: float = 90.0) -> list[int]:
    """The Deployments' revisions once each has moved past 2 (or as they are after ``within_s``), then 3 s on."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        revisions = [await asyncio.to_thread(revision, kube, namespace, n) for n in names]
        if all(r > 2 for r in revisions):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # a second undo, if one were coming, has had its chance
    return [await asyncio.to_thread(revision, kube, namespace, n) for n in names]


async def _facts_for(store: Store, namespace: str, run: str, rollback_names: list[str]) -> dict[str, object]:
    """The round's incidents: the notify groups carry the run id; the rollback groups name its Deployments."""
    notify = await _round_facts(store, run)
    rollback = [await _round_facts(store, f"{namespace}/{n}") for n in rollback_names]
    merged: dict[str, object] = dict(notify)
    merged["incidents_per_group"] = notify["incidents_per_group"] + sum(  # type: ignore[operator]
        (r["incidents_per_group"] for r in rollback), Counter()
    )
    for key in ("groups", "joined", "joined_distinct", "incidents_with_intents"):
        merged[key] = notify[key] + sum(r[key] for r in rollback)  # type: ignore[operator]
    for key in ("decided_per_incident", "intents_per_incident"):
        merged[key] = notify[key] + sum((r[key] for r in rollback), Counter())  # type: ignore[operator]
    return merged


async def test_two_replicas_handle_every_alert_once(
    kube: KubeCluster, namespace: str, postgres: Postgres, tmp_path: Path
) -> None:
    rules = rules_file("two-replicas", tmp_path / "rules")
    names = [f"tr-{i}-{uuid.uuid4().hex[:4]}" for i in range(ROUNDS * ROLLBACK_GROUPS)]
    await asyncio.to_thread(deploy_with_history, kube, namespace, names)
    url = await postgres.new_database()
    store = Store(url)
    pair = replica_pair(tmp_path, rules, kube, namespace, url)
    try:
        pair[0].start()
        pair[1].start()
        await asyncio.to_thread(wait_for_leader, pair)
        report = await _run_rounds(pair, store, kube, namespace, names)
    finally:
        for replica in pair:
            replica.stop()
        await store.close()
    print("\n" + "\n".join(report))
