"""``rollbackd replay``'s engine: recorded inputs through the live pipeline, in recorded time, changing nothing.

A replay is the daemon with its I/O swapped, not a second copy of its logic:
``wiring.build_components`` builds the same inbox, dispatcher, pipeline,
incident service, timers and executor the daemon runs, over

* a throwaway SQLite store (migrated like any other),
* a ``FakeClock`` that moves to each record's time (and to each timer's due
  time in between, so a deadline fires when it would have),
* no cluster client: the executor's own dry-run path answers every rollback,
* no leader election (this process leads) and no notifier (notifications are
  written to the outbox, where the report reads them, and never sent).

Alerts enter through ``Inbox.accept_alerts`` (the webhooks' dedupe) and are
handled by the dispatcher; deploy events through ``DeployHistoryStore`` (the
Kafka consumer's). After each record the replay waits until the dispatcher and
the rollback drivers are idle, so records are handled in recorded order. The
report is read back from the store: the same decision records the API serves.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.clock import FakeClock
from daemon.config import Settings
from daemon.rules import RuleRegistry
from daemon.sources.replay_reader import ReplayRecord
from daemon.store.db import Store
from daemon.store.outbox import queued_notifications
from daemon.wiring import Components, Io, build_components

REPLAY_CHANNEL = "replay"  # notifications are recorded for the report, never delivered


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the replay's story, in recorded time."""

    at: datetime
    kind: str  # deploy alert duplicate no_match transition notify timer
    text: str
    incident: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "incident": self.incident, "text": self.text, **self.data}


@dataclass
class ReplayReport:
    """What the daemon would have done: its inputs, the incidents' decision records, the story."""

    records: int = 0
    steps: list[Step] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)  # decision records, as the API serves them

    def decisions(self) -> list[dict[str, Any]]:
        """One per alert an incident took in: when, which alert, and the decision (the record's)."""
        return [
            {"at": a["at"], "alert": a["name"], "incident": inc["id"], **inc["decision"]}
            for inc in self.incidents
            for a in inc.get("alerts", [])
            if a.get("status") == "firing"
        ]

    def rollbacks(self) -> list[dict[str, Any]]:
        """The rollbacks that would have run (dry run), with when they started."""
        found = []
        for inc in self.incidents:
            started = [t["at"] for t in inc.get("timeline", []) if t["action"] == "rollback_started"]
            if started:
                decision = inc["decision"]
                found.append(
                    {"at": started[0], "incident": inc["id"], "rule": decision["rule"],
                     "targets": decision["targets"], "to_revision": decision.get("to_revision")}
                )  # fmt: skip
        return found

    def pending_timers(self) -> list[dict[str, Any]]:
        """Deadlines still ahead when the horizon ran out."""
        return [
            {"incident": inc["id"], "timer": t["kind"], "due": t["due_at"]}
            for inc in self.incidents
            for t in inc.get("timers", [])
            if t.get("status") == "pending"
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "steps": [s.to_json() for s in self.steps],
            "decisions": self.decisions(),
            "incidents": self.incidents,
            "rollbacks": self.rollbacks(),
            "pending_timers": self.pending_timers(),
        }


async def replay(
    settings: Settings, rules: RuleRegistry, records: Sequence[ReplayRecord], horizon: timedelta
) -> ReplayReport:
    """Feed ``records`` (any order: sorted by time here) through the live pipeline; then let timers run ``horizon``."""
    ordered = sorted(records, key=lambda r: r.at)
    report = ReplayReport(records=len(ordered))
    if not ordered:
        return report
    clock = FakeClock(ordered[0].at)
    with tempfile.TemporaryDirectory(prefix="rollbackd-replay-") as tmp:
        store = Store(f"sqlite+aiosqlite:///{Path(tmp) / 'replay.sqlite'}")
        try:
            await store.upgrade()
            io = Io(store, clock, None, None, True, notifiers=(), notify_channels=(REPLAY_CHANNEL,))
            c = build_components(settings, rules, io)
            await _run(c, clock, ordered, horizon, report)
            await _read_back(c, report)
        finally:
            await store.close()
    report.steps.sort(key=lambda s: s.at)
    return report


async def _run(
    c: Components, clock: FakeClock, records: Sequence[ReplayRecord], horizon: timedelta, report: ReplayReport
) -> None:
    dispatching = asyncio.create_task(c.dispatcher.run(), name="replay:dispatcher")
    try:
        for record in records:
            await _until(c, clock, record.at)
            await _feed(c, record, report)
        await _until(c, clock, records[-1].at + horizon)
    finally:
        await c.dispatcher.stop()
        await dispatching
        await c.incidents.close()


async def _until(c: Components, clock: FakeClock, when: datetime) -> None:
    """Move recorded time to ``when``, stopping at each timer due on the way to fire it then."""
    while (due := await c.incidents.timers.next_due()) is not None and due <= when:
        await clock.advance(max(0.0, (due - clock.now()).total_seconds()))
        await c.incidents.fire_due()
        await _settle(c)
    await clock.advance(max(0.0, (when - clock.now()).total_seconds()))


async def _feed(c: Components, record: ReplayRecord, report: ReplayReport) -> None:
    if record.deploy is not None:
        deploy = record.deploy
        new = await c.history.record_batch([deploy])
        what = deploy.version or deploy.image or deploy.event_id
        rev = f" revision {deploy.revision}" if deploy.revision is not None else ""
        text = f"deploy {deploy.kind.value}: {deploy.target} {what}{rev}" if new else f"duplicate deploy {what}"
        report.steps.append(Step(record.at, "deploy" if new else "duplicate", text))
    elif record.alert is not None:
        alert = record.alert
        accepted = await c.inbox.accept_alerts([alert])
        value = f" value={alert.value:g}" if alert.value is not None else ""
        if accepted.accepted:
            report.steps.append(Step(record.at, "alert", f"alert {alert.name} {alert.status.value}{value}"))
        else:
            report.steps.append(Step(record.at, "duplicate", f"duplicate ignored: {alert.name} {alert.status.value}"))
        await _settle(c)


async def _settle(c: Components) -> None:
    """Until the dispatcher has closed every row and every rollback driver has finished."""
    await c.dispatcher.wait_idle()
    await c.incidents.idle()


async def _read_back(c: Components, report: ReplayReport) -> None:
    """The decision records and the story, from what the live code wrote."""
    summaries = await c.incidents.list(limit=1000)
    for summary in reversed(summaries):  # oldest first
        record = (await c.incidents.get(summary.id)).to_json()
        report.incidents.append(record)
        for n, entry in enumerate(record.get("timeline", [])):
            at = datetime.fromisoformat(entry["at"])
            if n == 0:
                report.steps.append(Step(at, "decision", _decision_line(record["decision"]), incident=record["id"]))
            detail = entry.get("detail", {})
            text = f"{detail.get('from', '?')} -> {detail.get('to', '?')}: {detail.get('why', entry['action'])}"
            kind = "timer" if str(entry.get("actor", "")).startswith("timer:") else "transition"
            report.steps.append(Step(at, kind, f"{entry['action']} {text}", incident=record["id"]))
    async with c.store.transaction("replay report") as session:
        notes = await queued_notifications(session)
    for note in notes:
        report.steps.append(Step(note.created_at, "notify", f"notify {note.kind}", incident=note.incident_id))


def _decision_line(decision: dict[str, Any]) -> str:
    targets = ", ".join(decision.get("targets", [])) or "-"
    revision = f" to revision {decision['to_revision']}" if decision.get("to_revision") is not None else ""
    guard = " IRREVERSIBLE" if decision.get("irreversible") else ""
    return f"decision {decision['rule']}: {decision['severity']} {decision['action']}{guard} {targets}{revision}"
