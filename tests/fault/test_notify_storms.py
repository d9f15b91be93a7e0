"""Slack and PagerDuty answering storms of 429 and 5xx: every notification delivered once, in order.

The real notifiers (slack_sdk, pagerduty) and the durable outbox against the
loopback fakes. Eight incidents go through their whole life (six
notifications each, to both channels) while both services answer a seeded,
random mix of 429 (with Retry-After) and 500/502/503 to about half of all
calls. The same notifications are first delivered without faults to separate
fakes: the storm run must end with exactly that — per incident the same Slack
thread replies and the same PagerDuty actions in the same order, one top-level
message per incident, nothing twice, nothing missing. Time is a FakeClock, so
the storm is bounded however long the Retry-After values.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from daemon.clock import FakeClock
from daemon.notify.outbox import OutboxWorker
from daemon.store.db import Store
from tests.fakes.fixtures import enqueue, outbox_rows, pagerduty_notifier, slack_notifier
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.records import Lifecycle, lifecycle
from tests.fakes.slack_server import FakeSlack
from tests.fakes.tls import TlsFiles, make_self_signed

pytestmark = [pytest.mark.fault, pytest.mark.integration]
__all__ = ["lifecycle"]

INCIDENTS = [f"storm{i}" for i in range(8)]
SEED = 20260301


FAILURES_PER_SERVICE = 60  # a storm, not a permanent outage: the fakes' scripts are consumed in order


class _Storm:
    """Scripts 0-2 failures per service between rounds (429 with Retry-After, or 500/502/503), up to a cap."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.left = {"slack": FAILURES_PER_SERVICE, "pagerduty": FAILURES_PER_SERVICE}

    def script(self, slack: FakeSlack, pd: FakePagerDuty) -> None:
        for name, fail_next in (("slack", slack.fail_next), ("pagerduty", pd.fail_next)):
            for _ in range(min(self.left[name], self.rng.randint(0, 2))):
                self.left[name] -= 1
                if self.rng.random() < 0.4:
                    fail_next(1, status=429, retry_after=self.rng.randint(1, 20))
                else:
                    fail_next(1, status=self.rng.choice([500, 502, 503]))


async def _deliver(
    store: Store, clock: FakeClock, slack: FakeSlack, pd: FakePagerDuty, tls: TlsFiles, steps: Lifecycle,
    storm: _Storm | None = None,
) -> int:
    """Deliver every incident's lifecycle; with ``storm``, failures are scripted between rounds. Rounds used."""
    notifier = pagerduty_notifier(pd, tls, clock)
    worker = OutboxWorker(store, clock, [slack_notifier(slack), notifier])
    try:
        # Interleave the incidents the way they would really happen: step k of every incident, then k+1.
        for kind, rec in steps.pairs():
            for incident in INCIDENTS:
                await enqueue(store, clock, incident, kind, rec)
            if storm is not None:
                storm.script(slack, pd)
            await worker.run_once()
        for rounds in range(2000):
            if storm is not None:
                storm.script(slack, pd)
            if await worker.run_once() == 0:
                if all(r.state != "pending" for r in await outbox_rows(store)):
                    return rounds
                await clock.advance(15)
        stuck = [
            (r.incident_id, r.channel, r.attempts, r.next_attempt_at, r.last_error)
            for r in await outbox_rows(store)
            if r.state == "pending"
        ]
        raise AssertionError(f"outbox not drained within the bounded rounds; now {clock.now()}: {stuck[:5]}")
    finally:
        notifier.close()


def _slack_threads(slack: FakeSlack) -> dict[str, list[str]]:
    threads: dict[str, list[str]] = {}
    for message in slack.top_level():
        incident = next(
            i
            for i in INCIDENTS
            if f"rollbackd:ack:{i}" in str(message.blocks) or i in message.text or i in str(message.blocks)
        )
        assert incident not in threads, f"{incident}: a second top-level message"
        threads[incident] = [m.text for m in slack.thread(message.ts)]
    return threads


def _pd_actions(pd: FakePagerDuty) -> dict[str, list[str]]:
    actions: dict[str, list[str]] = {}
    for event in pd.events:
        actions.setdefault(event["dedup_key"], []).append(event["event_action"])
    return actions


async def _fakes(tls: TlsFiles) -> tuple[FakeSlack, FakePagerDuty]:
    from tests.fakes.fixtures import SLACK_TOKEN  # noqa: PLC0415

    return await FakeSlack(SLACK_TOKEN).start(), await FakePagerDuty(tls, limit_per_minute=10_000).start()


async def test_storms_deliver_everything_once_in_order(store: Store, tmp_path: Path, lifecycle: Lifecycle) -> None:
    tls = make_self_signed(tmp_path / "tls")
    # Reference: the same notifications, no faults.
    ref_store = Store(f"sqlite+aiosqlite:///{tmp_path / 'reference.sqlite'}")
    await ref_store.upgrade()
    ref_slack, ref_pd = await _fakes(tls)
    slack, pd = await _fakes(tls)
    try:
        await _deliver(ref_store, FakeClock(), ref_slack, ref_pd, tls, lifecycle)
        expected_threads, expected_actions = _slack_threads(ref_slack), _pd_actions(ref_pd)
        assert len(expected_threads) == len(INCIDENTS)
        assert all(len(t) == len(lifecycle.steps) for t in expected_threads.values())

        await _deliver(store, FakeClock(), slack, pd, tls, lifecycle, storm=_Storm(SEED))

        rows = await outbox_rows(store)
        assert [r.state for r in rows] == ["sent"] * len(rows), [
            (r.state, r.last_error) for r in rows if r.state != "sent"
        ]
        failures = sum(1 for c in slack.calls if c.status != 200) + sum(1 for s, _ in pd.requests if s >= 300)
        assert failures >= FAILURES_PER_SERVICE, f"the storm barely happened: {failures} failed calls"
        assert _slack_threads(slack) == expected_threads, "Slack: a step missing, repeated or out of order"
        assert _pd_actions(pd) == expected_actions, "PagerDuty: an event missing, repeated or out of order"
    finally:
        for server in (ref_slack, ref_pd, slack, pd):
            await server.stop()
        await ref_store.close()
