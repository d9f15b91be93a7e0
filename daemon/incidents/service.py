"""IncidentService: the incident stage's one entry point, between ``rules`` and ``actions``.

A thin facade over the stage's parts, each one job: ``write`` (the only
transaction path), ``intake`` (decisions, resolved alerts, break-glass),
``people`` (approve, reject, acknowledge, resolve), ``driver`` (the rollback,
on the leader, through the ``Executor`` protocol that ``actions`` implements),
``timers`` (deadlines that survive restarts) and ``read`` (the decision
records). The pipeline, the API, the CLI and the app talk to this class only.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bound_contextvars

from daemon.clock import Clock
from daemon.config import ApproverSettings
from daemon.control.guard import AutomationGuard
from daemon.incidents import events as ev
from daemon.incidents import repo
from daemon.incidents.approvals import Approvers
from daemon.incidents.driver import Driver, Executor
from daemon.incidents.intake import Intake
from daemon.incidents.kube_events import KubeEvents
from daemon.incidents.machine import Ignored, Incident, Policy, Transition
from daemon.incidents.people import People
from daemon.incidents.publish import Publications
from daemon.incidents.read import Reader
from daemon.incidents.timers import TimerRunner
from daemon.incidents.write import Writer, starts_rollback
from daemon.logs import get_logger
from daemon.model import ApprovalRequirement
from daemon.store.db import Store

__all__ = ["Executor", "IncidentService"]

log = get_logger(__name__)


class IncidentService:
    """Opens, joins and drives incidents; verifies approvals; runs timers; resumes after a restart."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        approvers: list[ApproverSettings],
        executor: Executor,
        *,
        manual_rollback: Callable[[], ApprovalRequirement],
        manual_forced_after: Callable[[], float | None] = lambda: None,
        is_leader: Callable[[], bool] = lambda: True,
        policy: Policy | None = None,
        notify_channels: tuple[str, ...] = ("slack", "pagerduty"),
        on_notify: Callable[[], None] | None = None,
        publish_as: str | None = None,
        guard: AutomationGuard | None = None,
        kube_events: bool = False,
    ) -> None:
        self._clock = clock
        self._on_notify = on_notify
        self.policy = policy or Policy()
        self.approvers = Approvers(store, clock, approvers)
        # Decision and action events for the outbox's kafka channel, stamped with this replica's name.
        publish = Publications(clock, publish_as)
        # The writer reports each commit to ``_committed``, which needs the driver built below;
        # nothing can commit before this constructor returns, so the facade is complete by then.
        self._writer = Writer(
            store, clock, self.policy, is_leader=is_leader, notify_channels=notify_channels, on_commit=self._committed,
            may_hold=(lambda inc: guard.may_hold(inc.decision)) if guard is not None else lambda _inc: False,
        )  # fmt: skip
        events = KubeEvents(enabled=kube_events)  # Events on the targets, when a cluster is connected
        self._driver = Driver(
            store, clock, self._writer, executor, publish, is_leader=is_leader, guard=guard, events=events
        )
        self._intake = Intake(
            store, clock, self._writer, self.approvers, publish, manual_rollback=manual_rollback, on_notify=on_notify,
            manual_forced_after=manual_forced_after,
        )  # fmt: skip
        self._people = People(store, clock, self._writer, self.approvers)
        self._reader = Reader(store)
        redrive = self._driver.redrive
        self.timers = TimerRunner(store, clock, fire=self._fire_timer, is_leader=is_leader, redrive=redrive)
        # What callers call, answered by the part whose job it is.
        self.on_decision = self._intake.on_decision
        self.decide = self._intake.decide
        self.on_alert_resolved = self._intake.on_alert_resolved
        self.manual_rollback = self._intake.manual_rollback
        self.approve = self._people.approve
        self.reject = self._people.reject
        self.reject_verified = self._people.reject_verified
        self.acknowledge = self._people.acknowledge
        self.resolve = self._people.resolve
        self.get = self._reader.get
        self.list = self._reader.list
        self.idle = self._driver.idle
        self.close = self._driver.close  # the store keeps running rollbacks' state; ``resume`` picks them up

    def _committed(self, result: Transition | Ignored) -> None:
        # The driver goes first: the rollback PATCH is what a responder is waiting for.
        if isinstance(result, Transition) and starts_rollback(result):
            self._driver.spawn(result.incident.id, result.incident)
        notified = isinstance(result, Transition) and any(isinstance(e, ev.Notify) for e in result.effects)
        if self._on_notify is not None and notified:
            self._on_notify()

    # --- timers, rollbacks, restart --------------------------------------------------------------

    async def run_timers(self) -> None:
        """Fire due deadlines forever (leader only); cancel the task to stop."""
        await self.timers.run()

    async def fire_due(self) -> int:
        """Fire every timer due now; the count fired."""
        return await self.timers.fire_due()

    async def _fire_timer(self, incident_id: str, timer_id: int, kind: ev.TimerKind) -> None:
        async def claim(s: AsyncSession, _inc: Incident) -> bool:
            return await repo.claim_timer(s, timer_id, self._clock.now())

        event = ev.TIMER_EVENTS[kind](at=self._clock.now(), actor=f"timer:{kind.value}")
        with bound_contextvars(incident_id=incident_id):
            await self._writer.apply(incident_id, event, extra=claim, strict=False)

    async def resume(self) -> list[str]:
        """At start-up: re-drive incidents left approved, rolling back or verifying. Timers live in the store."""
        ids = await self._driver.redrive()
        log.info("incidents resumed", redriven=len(ids), next_timer=str(await self.timers.next_due()))
        return ids
