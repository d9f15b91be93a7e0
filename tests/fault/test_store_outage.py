"""PostgreSQL stops for 10 s under a steady webhook load: nothing answered 200 is lost, the daemon stays up.

``rollbackd run`` runs as a real process on a PostgreSQL of this test's own
(so the session's database is not disturbed), with a rule that decides every
alert. Four senders post distinct alerts the whole time; after 3 s the
database gets a fast shutdown and comes back 10 s later on the same port.

Afterwards:
* the daemon is still running and never logged a traceback;
* ``/readyz`` answered 503 while the database was away and 200 after;
* every webhook got 200 or 503, and every 503 carried ``Retry-After``;
* every alert answered 200 was decided exactly once (the decision counter
  equals the number of them, and each joined its incident once), all within
  30 s of the database's return.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from daemon.store.db import Store
from daemon.store.tables import InboxRow, IncidentAlertRow
from tests.daemon_process import INGEST_TOKEN, DaemonProcess
from tests.fixtures import rules_file
from tests.replicas import metric
from tests.stack.postgres import Postgres
from tests.webhooks import firing_alert, webhook_bodies

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SENDERS = 4
BEFORE_S, OUTAGE_S, AFTER_S = 3.0, 10.0, 5.0
HANDLED_WITHIN_S = 30.0

class Load:
    """Senders that post distinct alerts until told to stop, remembering which were answered 200."""

    def __init__(self, daemon: DaemonProcess, run: str) -> None:
        self.daemon = daemon
        self.run = run
        self.statuses: Counter[int] = Counter()
        self.accepted: set[str] = set()  # fingerprints answered 200
        self.missing_retry_after = 0
        self.stop = asyncio.Event()
        self._seq = 0

    async def sender(self, client: httpx.AsyncClient) -> None:
        import random  # noqa: PLC0415 - only the shuffle of two alerts

        while not self.stop.is_set():
            alerts = []
            for _ in range(2):
                self._seq += 1
                target = f"svc-{self._seq % 20}"
                alerts.append(firing_alert("OutageProbe", f"ns-{self.run}", target, self._seq, self.run))
            (body,) = webhook_bodies(alerts, random.Random(self._seq))
            try:
                resp = await client.post("/webhooks/alertmanager", content=body)
            except httpx.TransportError:
                self.statuses[0] += 1  # no answer is not a 2xx: nothing is promised (and it is counted)
                await asyncio.sleep(0.2)
                continue
            self.statuses[resp.status_code] += 1
            if resp.status_code == 200:
                self.accepted.update(str(a["fingerprint"]) for a in alerts)
            elif resp.status_code == 503 and "retry-after" not in resp.headers:
                self.missing_retry_after += 1
            await asyncio.sleep(0.05)

    async def run_all(self) -> None:
        headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=self.daemon.url, headers=headers, timeout=15) as client:
            await asyncio.gather(*(self.sender(client) for _ in range(SENDERS)))


async def _probe_ready(daemon: DaemonProcess, stop: asyncio.Event, seen: list[tuple[float, int]]) -> None:
    async with httpx.AsyncClient(base_url=daemon.url, timeout=5) as client:
        while not stop.is_set():
            # Stamped when asked, not when answered: a probe sent before the outage may be
            # answered (200) seconds into it by a daemon busy with the load.
            asked = time.monotonic()
            try:
                seen.append((asked, (await client.get("/readyz")).status_code))
            except httpx.HTTPError:
                seen.append((asked, 0))
            await asyncio.sleep(0.25)


async def _handled(store: Store, fingerprints: set[str]) -> tuple[int, int]:
    """(inbox rows still open, accepted alerts that joined an incident)."""
    async with store.transaction() as s:
        left = (await s.execute(select(func.count()).where(InboxRow.processed_at.is_(None)))).scalar_one()
        joined = (await s.execute(select(IncidentAlertRow.fingerprint))).scalars().all()
    return int(left), len(fingerprints & set(joined))


async def _outage(daemon: DaemonProcess, pg: Postgres, store: Store, load: Load) -> dict[str, object]:
    """Load, take the database away for ``OUTAGE_S``, bring it back, wait until every accepted alert is handled."""
    probe_stop, ready = asyncio.Event(), []
    loading = asyncio.create_task(load.run_all())
    probing = asyncio.create_task(_probe_ready(daemon, probe_stop, ready))
    await asyncio.sleep(BEFORE_S)
    down_at = time.monotonic()
    await asyncio.to_thread(pg.outage)
    await asyncio.sleep(OUTAGE_S)
    back_at = time.monotonic()  # the server may answer before recover() returns
    await asyncio.to_thread(pg.recover)
    up_at = time.monotonic()
    await asyncio.sleep(AFTER_S)
    load.stop.set()
    await loading
    while True:  # every accepted alert handled, within the bound
        left, joined = await _handled(store, load.accepted)
        if left == 0 and joined == len(load.accepted):
            break
        assert time.monotonic() - up_at < HANDLED_WITHIN_S, (
            f"{left} rows open, {len(load.accepted) - joined} accepted alerts not handled "
            f"{HANDLED_WITHIN_S:.0f} s after recovery\n{daemon.log_tail(40)}"
        )
        await asyncio.sleep(0.25)
    handled_after = time.monotonic() - up_at
    # /readyz "after" is read from 5 s after recovery: probe at least a second of it, however soon
    # the backlog was handled (a fast dispatcher left that window empty).
    await asyncio.sleep(max(0.0, up_at + 6.5 - time.monotonic()))
    probe_stop.set()
    await probing
    return {
        "handled_after_s": handled_after,
        "ready_during": {code for at, code in ready if down_at + 2 < at < back_at},
        "ready_after": {code for at, code in ready if at > up_at + 5},
        "decided": metric(daemon, "rollbackd_decisions_total"),
        "store_errors": metric(daemon, "rollbackd_store_errors_total", reason="store"),
        "refused_for_store": metric(daemon, "rollbackd_http_rejected_total", reason="store"),
        "alive": daemon.popen is not None and daemon.popen.poll() is None,
    }


async def test_a_database_restart_loses_no_accepted_alert(tmp_path: Path) -> None:
    pg = Postgres(tmp_path / "pg")
    url = pg.start()["dsn"]
    rules = rules_file("notify", tmp_path / "rules", alertname="OutageProbe")
    daemon = DaemonProcess(tmp_path / "daemon", rules=[rules], extra={"store": {"url": url}}, log_level="info")
    store = Store(url)
    load = Load(daemon, uuid.uuid4().hex[:6])
    try:
        daemon.start()
        seen = await _outage(daemon, pg, store, load)
    finally:
        daemon.stop()
        await store.close()
        pg.stop()
    log = (daemon.workdir / "rollbackd.log").read_text(errors="replace")
    print(
        f"\nstore outage: statuses {dict(load.statuses)}, {len(load.accepted)} alerts accepted, all handled"
        f" {seen['handled_after_s']:.1f} s after recovery; /readyz during {sorted(seen['ready_during'])},"  # type: ignore[call-overload]
        f" after {sorted(seen['ready_after'])}"  # type: ignore[call-overload]
    )
    assert seen["alive"], "the daemon exited during the outage"
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 2000) : log.find("Traceback") + 2000]
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert load.statuses[503] > 0, "no webhook met the outage: the test did not test it"
    assert load.missing_retry_after == 0
    assert seen["ready_during"] == {503}, seen
    assert seen["ready_after"] == {200}, seen
    assert seen["decided"] == len(load.accepted)  # each accepted alert decided once, none twice
    # Every refusal was counted as one for the store; the failures behind them were counted too
    # (fewer than the refusals: the requests of one group commit share one failed write).
    assert seen["refused_for_store"] >= load.statuses[503], seen
    assert seen["store_errors"] > 0, seen
