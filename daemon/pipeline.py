"""The glue between the inbox and the incidents: evaluate each alert against the rules.

The dispatcher hands every inbox item (an alert) to ``Pipeline.handle`` in
per-target order. A firing alert is evaluated (pure, against a snapshot of the
recent deploy history, read only when a rule that may match correlates) and
each decision goes to the incident service; a resolved alert updates the
incident it belongs to. Publishing the decision to Kafka is not done here: the
incident service queues it in the outbox with the incident change, so a broker
outage never holds up a decision.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from daemon.clock import Clock, SystemClock
from daemon.control.shadow import as_configured
from daemon.deploys import DeployHistory
from daemon.incidents.service import IncidentService
from daemon.ingest import InboxItem
from daemon.ingest.history import DeployHistoryStore
from daemon.logs import get_logger
from daemon.metrics import DECISIONS, RULE_EVAL_SECONDS
from daemon.model import Alert, AlertStatus
from daemon.rules import RuleRegistry
from daemon.rules.freeze import with_freeze
from daemon.rules.ruleset import RuleSet

log = get_logger(__name__)

# How far back deploy history is read for correlation; rules ask for windows within it.
HISTORY_WINDOW = timedelta(hours=24)
_NO_HISTORY = DeployHistory()


class Pipeline:
    """The dispatcher's handler: inbox item → rules → incidents."""

    def __init__(
        self,
        rules: RuleRegistry,
        history: DeployHistoryStore,
        incidents: IncidentService,
        *,
        shadow_namespaces: frozenset[str] = frozenset(),
        clock: Clock | None = None,
    ) -> None:
        self._shadow_namespaces = shadow_namespaces  # the configuration's shadow override (control.shadow)
        self._clock: Clock = clock or SystemClock()  # freeze windows are in force at the decision's time
        self._rules = rules
        self._history = history
        self._incidents = incidents

    async def handle(self, item: InboxItem) -> None:
        alert = item.alert
        with structlog.contextvars.bound_contextvars(source=alert.source, alert=alert.name):
            if alert.status is AlertStatus.RESOLVED:
                await self._incidents.on_alert_resolved(alert)
                return
            rules = self._rules.current  # one rule set for the whole item, even across a reload
            history = await self._history_for(rules, alert)
            with RULE_EVAL_SECONDS.time():
                decisions = rules.evaluate(alert, history)
            if not decisions:
                log.debug("no rule matched")
            for ruled in decisions:
                frozen = with_freeze(ruled, rules.freeze_windows, self._clock.now())
                decision = as_configured(frozen, self._shadow_namespaces)
                decided = await self._incidents.decide(decision, alert)
                # Counted once recorded: an attempt the store refused is retried and must not count twice.
                DECISIONS.labels(rule=decision.rule, action=decision.action.value).inc()
                incident_id = decided if isinstance(decided, str) else decided.id
                log.info("decision", rule=decision.rule, action=decision.action.value, incident_id=incident_id)

    async def _history_for(self, rules: RuleSet, alert: Alert) -> DeployHistory:
        """The recent deploys of the alert's target, read only when a rule that may match correlates."""
        if not rules.needs_history(alert):
            return _NO_HISTORY  # a database read per alert was most of the cost of uncorrelated alerts
        # The alert's own workload; else the workloads the matching rules name (engine._correlate).
        targets = (alert.target,) if alert.target is not None else rules.correlated_targets(alert)
        return await self._history.snapshot(
            targets=targets,
            service=alert.labels.get("service"),
            since=alert.starts_at - HISTORY_WINDOW,
        )
