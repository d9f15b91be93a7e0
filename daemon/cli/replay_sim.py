"""The dry-run simulation behind ``rollbackd replay``: recorded inputs → rules → incident state machine.

Everything here is pure and in recorded time: no store, no cluster, no
notifier, no clock. It mirrors the live path (``ingest`` dedupe →
``pipeline`` → ``incidents.service``) with the same parts: deploy events build
the ``DeployHistory``, firing alerts are evaluated by ``RuleSet.evaluate``,
each decision opens or joins an incident through ``incidents.machine``, and
the machine's timers (approval deadline, act-within window, escalation,
rollback-time objective) fire when recorded time passes them. Nobody
acknowledges, approves or rejects in a replay, so a timer's consequence is what
would have happened without people. A rollback is reported, never executed; the
executor's own refusals (budget, loop breaker, leadership) are not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from daemon.incidents import events as ev
from daemon.incidents.machine import Ignored, Incident, Policy, Transition, open_incident, transition
from daemon.model import Alert, AlertStatus, Decision, DeployEvent, DeployHistory
from daemon.rules import RuleSet
from daemon.sources.replay_reader import ReplayRecord

HISTORY_WINDOW = timedelta(hours=24)  # as daemon.pipeline: how far back deploys are correlated


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the replay's story."""

    at: datetime
    kind: str  # deploy alert decision no_match transition notify rollback timer ignored duplicate
    text: str
    incident: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "incident": self.incident, "text": self.text, **self.data}


@dataclass
class ReplayResult:
    steps: list[Step] = field(default_factory=list)
    decisions: list[tuple[datetime, str, Decision]] = field(default_factory=list)  # (at, alert, decision)
    incidents: dict[str, Incident] = field(default_factory=dict)
    rollbacks: list[tuple[datetime, str, Decision]] = field(default_factory=list)  # (at, incident, decision)
    pending_timers: list[tuple[str, ev.TimerKind, datetime]] = field(default_factory=list)


class Replay:
    """Feeds records in time order; ``finish(horizon)`` lets the timers run out."""

    def __init__(self, rules: RuleSet, policy: Policy | None = None) -> None:
        self._rules = rules
        self._policy = policy or Policy()
        self._history: list[DeployEvent] = []  # newest first
        self._seen: set[str] = set()
        self._timers: dict[tuple[str, ev.TimerKind], datetime] = {}
        self._open_by_group: dict[str, str] = {}
        self.result = ReplayResult()

    def run(self, records: Iterable[ReplayRecord], horizon: timedelta) -> ReplayResult:
        last: datetime | None = None
        for record in records:
            self.feed(record)
            last = record.at
        if last is not None:
            self._fire_timers(last + horizon)
        self.result.pending_timers = sorted(
            ((iid, kind, due) for (iid, kind), due in self._timers.items()), key=lambda t: t[2]
        )
        return self.result

    def feed(self, record: ReplayRecord) -> None:
        self._fire_timers(record.at)
        if record.deploy is not None:
            self._deploy(record.deploy, record.at)
        elif record.alert is not None:
            self._alert(record.alert, record.at)

    # --- inputs ------------------------------------------------------------------------------

    def _deploy(self, deploy: DeployEvent, at: datetime) -> None:
        if not self._first(f"deploy:{deploy.event_id}", at, deploy.event_id):
            return
        self._history.append(deploy)
        self._history.sort(key=lambda d: d.at, reverse=True)
        rev = f" revision {deploy.revision}" if deploy.revision is not None else ""
        extra = " (ran a migration)" if deploy.migration else ""
        what = deploy.version or deploy.image or deploy.event_id
        self._step(at, "deploy", f"deploy {deploy.kind.value}: {deploy.target} {what}{rev}{extra}")

    def _alert(self, alert: Alert, at: datetime) -> None:
        if not self._first(alert.dedupe_key, at, f"{alert.name} {alert.status.value}"):
            return
        value = f" value={alert.value:g}" if alert.value is not None else ""
        self._step(at, "alert", f"alert {alert.name} {alert.status.value}{value} {_labels(alert)}")
        if alert.status is AlertStatus.RESOLVED:
            for inc in list(self.result.incidents.values()):
                if inc.open and alert.fingerprint in inc.firing:
                    event = ev.AlertResolved(at=at, actor=f"alert:{alert.name}", fingerprint=alert.fingerprint)
                    self._apply(inc, event)
            return
        since = alert.starts_at - HISTORY_WINDOW
        history = DeployHistory(tuple(d for d in self._history if d.at >= since))
        decisions = self._rules.evaluate(alert, history)
        if not decisions:
            self._step(at, "no_match", f"no rule matched {alert.name}")
        for decision in decisions:
            self.result.decisions.append((at, alert.name, decision))
            self._decision(decision, alert, at)

    def _decision(self, decision: Decision, alert: Alert, at: datetime) -> None:
        targets = ", ".join(str(t) for t in decision.targets) or "-"
        revision = f" to revision {decision.to_revision}" if decision.to_revision is not None else ""
        guard = " IRREVERSIBLE" if decision.irreversible else ""
        self._step(
            at,
            "decision",
            f"decision {decision.rule}: {decision.severity.value} {decision.action.value}{guard} {targets}{revision}",
            data={"decision": decision.to_json()},
        )
        existing = self._open_by_group.get(decision.group_key)
        if existing is not None and self.result.incidents[existing].open:
            event = ev.Decided(at=at, actor=f"rule:{decision.rule}", fingerprint=alert.fingerprint)
            self._apply(self.result.incidents[existing], event)
            return
        incident_id = f"R{len(self.result.incidents) + 1}"
        opened = open_incident(incident_id, decision, alert.fingerprint, at, self._policy)
        self._open_by_group[decision.group_key] = incident_id
        self._record(opened, None, ev.Decided(at=at, actor=f"rule:{decision.rule}", fingerprint=alert.fingerprint))

    # --- the machine ---------------------------------------------------------------------------

    def _apply(self, inc: Incident, event: ev.Event) -> None:
        result = transition(inc, event, self._policy)
        if isinstance(result, Ignored):
            if result.invalid:
                self._step(event.at, "ignored", f"{event.name} ignored: {result.reason}", incident=inc.id)
            return
        self._record(result, inc, event)

    def _record(self, t: Transition, before: Incident | None, event: ev.Event) -> None:
        inc = t.incident
        self.result.incidents[inc.id] = inc
        rollback = False
        for effect in t.effects:
            if isinstance(effect, ev.Audit):
                why = effect.detail.get("why", "")
                move = f"{before.state.value if before else 'new'} -> {inc.state.value}"
                self._step(event.at, "transition", f"{move}: {why}", incident=inc.id)
            elif isinstance(effect, ev.Notify):
                channels = ",".join(inc.decision.channels) or "-"
                self._step(event.at, "notify", f"notify [{channels}] {effect.kind.value}", incident=inc.id)
            elif isinstance(effect, ev.SetTimer):
                self._timers[(inc.id, effect.kind)] = effect.due
            elif isinstance(effect, ev.CancelTimer):
                self._timers.pop((inc.id, effect.kind), None)
            else:  # StartRollback
                rollback = True
        if not inc.open:
            self._open_by_group.pop(inc.decision.group_key, None)
        if rollback:
            self._dry_run_rollback(inc, event.at)

    def _dry_run_rollback(self, inc: Incident, at: datetime) -> None:
        """What the daemon does in dry-run mode: the executor changes nothing, reports success, no verification."""
        self.result.rollbacks.append((at, inc.id, inc.decision))
        targets = ", ".join(str(t) for t in inc.decision.targets) or "(no target)"
        to = f" to revision {inc.decision.to_revision}" if inc.decision.to_revision is not None else ""
        self._step(at, "rollback", f"WOULD ROLL BACK {targets}{to} (dry run: nothing changed)", incident=inc.id)
        self._apply(self.result.incidents[inc.id], ev.RollbackStarted(at=at))
        detail = f"dry run: {targets} would go back{to or ' to the previous revision'}"
        self._apply(self.result.incidents[inc.id], ev.RollbackFinished(at=at, ok=True, detail=detail))
        self._apply(self.result.incidents[inc.id], ev.VerificationPassed(at=at, detail="dry run: not verified"))

    def _fire_timers(self, until: datetime) -> None:
        """Fire every timer due at or before ``until``, earliest first (a firing may set new ones)."""
        while True:
            due = [(at, key) for key, at in self._timers.items() if at <= until]
            if not due:
                return
            at, (incident_id, kind) = min(due)
            del self._timers[(incident_id, kind)]
            inc = self.result.incidents[incident_id]
            self._step(at, "timer", f"timer {kind.value} due", incident=incident_id)
            self._apply(inc, ev.TIMER_EVENTS[kind](at=at, actor="timer"))

    # --- helpers --------------------------------------------------------------------------------

    def _first(self, key: str, at: datetime, what: str) -> bool:
        """The live dedupe (the inbox's for alerts, the deploy history's event id for deploys): news only once."""
        if key in self._seen:
            self._step(at, "duplicate", f"duplicate ignored: {what}")
            return False
        self._seen.add(key)
        return True

    def _step(
        self, at: datetime, kind: str, text: str, *, incident: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        self.result.steps.append(Step(at, kind, text, incident, data or {}))


def _labels(alert: Alert) -> str:
    keys = ("namespace", "deployment", "service")
    return "{" + ", ".join(f"{k}={alert.labels[k]}" for k in keys if k in alert.labels) + "}"
