"""IncidentService: the persisted side of the state machine, between ``rules`` and ``actions``.

Every change follows one path (``_apply``): load the incident and its version,
feed one event to ``machine.transition``, save the new value only if the
version still matches, and write the effects — audit entry, timers, outbox
notifications — in the same transaction. Rollbacks start after the commit, on
the leader only, through the ``Executor`` protocol that ``actions`` implements;
the executor is idempotent per incident and target, so re-driving an incident
after a restart never rolls back twice.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bound_contextvars

from daemon.clock import Clock
from daemon.config import ApproverSettings
from daemon.errors import RollbackdError, TemporaryError
from daemon.incidents import events as ev
from daemon.incidents import repo
from daemon.incidents.approvals import Approver, Approvers, pick_role
from daemon.incidents.errors import ConcurrentUpdateError, InvalidTransitionError, NotPermittedError
from daemon.incidents.machine import (
    MANUAL_RULE,
    Ignored,
    Incident,
    Policy,
    State,
    Transition,
    Vote,
    open_incident,
    transition,
)
from daemon.incidents.publish import Publications
from daemon.incidents.record import IncidentView
from daemon.incidents.timers import TimerRunner
from daemon.logs import get_logger
from daemon.metrics import ACKS, APPROVAL_WAIT, TRANSITIONS
from daemon.model import (
    ActionKind,
    Alert,
    ApprovalRequirement,
    Decision,
    NotificationEvent,
    RollbackOutcome,
    RollbackRequest,
    Severity,
    Target,
    TargetOutcome,
    TargetResult,
)
from daemon.store.db import Store
from daemon.store.errors import ConstraintError
from daemon.store.outbox import enqueue_notification
from daemon.store.tables import OPEN_GROUP_INDEX

log = get_logger(__name__)

ATTEMPTS = 3
# Two writers arming the same timer of one incident at once: the loser reloads and tries again.
_RACY_CONSTRAINTS = frozenset({"timers_incident_id_kind_key"})
_DRIVE_BACKOFF_CAP_S = 5.0
DRIVEN = (State.APPROVED.value, State.ROLLING_BACK.value, State.VERIFYING.value)
_GOOD = {TargetResult.ROLLED_BACK, TargetResult.ALREADY_DONE, TargetResult.DRY_RUN}

Extra = Callable[[AsyncSession, Incident], Awaitable[bool]]
# One applied event: the state before it, what the machine made of it, the event itself.
Step = tuple[State, Transition, ev.Event]


class Executor(Protocol):
    """What ``actions`` offers: roll back once per incident and target; safe to call again."""

    async def execute(self, req: RollbackRequest) -> RollbackOutcome: ...


@dataclass(frozen=True, slots=True)
class Applied:
    view: IncidentView
    result: Transition | Ignored


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
        is_leader: Callable[[], bool] = lambda: True,
        policy: Policy | None = None,
        notify_channels: tuple[str, ...] = ("slack", "pagerduty"),
        on_notify: Callable[[], None] | None = None,
        publish_as: str | None = None,
    ) -> None:
        self._store = store
        # Decision and action events for the outbox's kafka channel, stamped with this replica's name.
        self._publish = Publications(clock, publish_as)
        # Only channels that have a notifier get outbox rows; others would wait forever.
        self._notify_channels = notify_channels
        self._on_notify = on_notify
        self._clock = clock
        self._executor = executor
        self._manual_requirement = manual_rollback
        self._is_leader = is_leader
        self.policy = policy or Policy()
        self.approvers = Approvers(store, clock, approvers)
        self.timers = TimerRunner(store, clock, fire=self._fire_timer, is_leader=is_leader, redrive=self._redrive)
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()

    # --- the one write path --------------------------------------------------------------------

    async def _apply(
        self, incident_id: str, event: ev.Event, *, extra: Extra | None = None, strict: bool = True
    ) -> Applied:
        """Apply ``event``; ``extra`` writes rows in the same transaction (False: abort quietly)."""
        for attempt in range(ATTEMPTS):
            try:
                async with self._store.transaction() as s:
                    inc, version = await repo.load(s, incident_id)
                    if extra is not None and not await extra(s, inc):
                        return Applied(await repo.view(s, incident_id), Ignored("superseded"))
                    result = transition(inc, event, self.policy)
                    if isinstance(result, Transition):
                        steps = self._with_start([(inc.state, result, event)])
                        result = _combined(steps)
                        await repo.save(s, result.incident, version)
                        view = await self._write(s, incident_id, steps)
                    else:
                        if result.invalid and strict:
                            raise InvalidTransitionError(
                                f"incident {incident_id} is {inc.state.value}: {result.reason}"
                            )
                        view = await repo.view(s, incident_id)
            except (ConcurrentUpdateError, ConstraintError) as exc:
                if isinstance(exc, ConstraintError) and exc.constraint not in _RACY_CONSTRAINTS:
                    raise
                if attempt + 1 == ATTEMPTS:
                    raise ConcurrentUpdateError(incident_id) from None
                continue
            self._after(result)
            return Applied(view, result)
        raise ConcurrentUpdateError(incident_id)  # pragma: no cover - the loop returns or raises

    def _with_start(self, steps: list[Step]) -> list[Step]:
        """Fold ``approved → rolling_back`` into the transaction that approved, on the leader.

        The leader drives the rollback as soon as this commits, so a separate
        transaction for ``RollbackStarted`` only added latency before the PATCH.
        Crash safety is unchanged: ``rolling_back`` is re-driven at start-up like
        ``approved``, and the executor is idempotent per incident and target.
        A standby leaves the incident approved for the leader to pick up.
        """
        last = steps[-1][1]
        starts = any(isinstance(e, ev.StartRollback) for e in last.effects)
        if not starts or last.incident.state is not State.APPROVED or not self._is_leader():
            return steps
        started = ev.RollbackStarted(at=self._clock.now())
        nxt = transition(last.incident, started, self.policy)
        if not isinstance(nxt, Transition):  # pragma: no cover - approved always accepts RollbackStarted
            return steps
        return [*steps, (State.APPROVED, nxt, started)]

    async def _write(
        self, s: AsyncSession, incident_id: str, steps: Sequence[Step], *, new_incident: bool = False
    ) -> IncidentView:
        """Write every step's effects, then the decision record once; it is returned for the caller.

        Audit entries and timers go first, so the record carried by each outbox
        notification is exactly what this transaction commits.
        """
        notes: list[tuple[Incident, ev.Notify]] = []
        armed: set[ev.TimerKind] = set()  # a new incident's timers need no lookup, until one is set twice
        for before, t, event in steps:
            inc = t.incident
            via = getattr(event, "via", None)
            for effect in t.effects:
                if isinstance(effect, ev.Audit):
                    detail = dict(effect.detail) | ({"via": via} if via else {})
                    if isinstance(event, ev.RollbackFinished) and event.results:
                        detail["results"] = [dict(r) for r in event.results]
                    repo.add_audit(s, inc.id, at=event.at, actor=effect.actor, action=effect.action, detail=detail)
                elif isinstance(effect, ev.SetTimer):
                    fresh = new_incident and effect.kind not in armed
                    await repo.set_timer(s, inc.id, effect.kind, effect.due, new_incident=fresh)
                    armed.add(effect.kind)
                elif isinstance(effect, ev.CancelTimer):
                    await repo.cancel_timer(s, inc.id, effect.kind)
                elif isinstance(effect, ev.Notify):
                    notes.append((inc, effect))
            if before is not inc.state:
                TRANSITIONS.labels(from_state=before.value, to_state=inc.state.value).inc()
                if inc.state is State.APPROVED:
                    APPROVAL_WAIT.observe((event.at - inc.opened_at).total_seconds())
        await s.flush()
        view = await repo.view(s, incident_id)
        if notes:
            record, now = view.to_json(), self._clock.now()
            for inc, note in notes:
                n = NotificationEvent(
                    inc.id, note.kind, inc.decision.severity, note.summary, record, inc.decision.channels
                )
                await enqueue_notification(s, n, now, channels=self._notify_channels)
        return view

    def _after(self, result: Transition | Ignored) -> None:
        # Called after the commit, so the driver and a woken outbox worker find the new rows.
        # The driver goes first: the rollback PATCH is what a responder is waiting for.
        if isinstance(result, Transition) and any(isinstance(e, ev.StartRollback) for e in result.effects):
            self._spawn(result.incident.id, result.incident)
        notified = isinstance(result, Transition) and any(isinstance(e, ev.Notify) for e in result.effects)
        if self._on_notify is not None and notified:
            self._on_notify()

    # --- inputs from the pipeline --------------------------------------------------------------

    async def on_decision(self, decision: Decision, alert: Alert) -> IncidentView:
        """A decision for ``alert``: join the open incident of its group, or open a new one."""
        with bound_contextvars(rule=decision.rule):
            for _ in range(ATTEMPTS):
                # The group lookup shares the opening transaction: one commit before the rollback starts.
                existing = await self._open(decision, alert, join_group=True)
                if isinstance(existing, IncidentView):
                    return existing

                async def join(s: AsyncSession, inc: Incident) -> bool:
                    if not inc.open:
                        return False
                    if alert.fingerprint not in inc.firing:
                        repo.add_alert(s, inc.id, alert, self._clock.now())
                    self._publish.decision(s, inc.id, decision)
                    return True

                event = ev.Decided(at=self._clock.now(), actor=f"rule:{decision.rule}", fingerprint=alert.fingerprint)
                applied = await self._apply(existing, event, extra=join, strict=False)
                if self._publish.enabled and self._on_notify is not None:
                    self._on_notify()  # a join may change nothing else, yet its decision event is due
                if applied.view.open:
                    return applied.view
            raise ConcurrentUpdateError(decision.group_key)

    async def _open(
        self,
        decision: Decision,
        alert: Alert | None,
        votes: Sequence[tuple[Approver, str]] = (),
        *,
        join_group: bool = False,
    ) -> IncidentView | str:
        """A new incident; with ``join_group``, the id of the group's open incident instead if there is one."""
        now = self._clock.now()
        incident_id = secrets.token_hex(6)
        fingerprint = alert.fingerprint if alert else ""
        t = open_incident(incident_id, decision, fingerprint, now, self.policy)
        steps: list[Step] = [(State.OPEN, t, ev.Decided(at=now, fingerprint=fingerprint))]
        for approver, role in votes:
            vote = ev.Approved(at=now, actor=approver.name, approver=approver.name, role=role, via="break-glass")
            nxt = transition(steps[-1][1].incident, vote, self.policy)
            if isinstance(nxt, Ignored):
                raise NotPermittedError(f"approval by {approver.name} does not count: {nxt.reason}")
            steps.append((steps[-1][1].incident.state, nxt, vote))
        final = steps[-1][1].incident
        if votes and final.state is not State.APPROVED:
            still = ", ".join(f"{n}x {r}" for r, n in final.missing_roles().items())
            raise NotPermittedError(f"the manual-rollback quorum is not met; still needed: {still}")
        steps = self._with_start(steps)
        final = steps[-1][1].incident
        with bound_contextvars(incident_id=incident_id):
            try:
                async with self._store.transaction() as s:
                    if join_group and (existing := await repo.find_open(s, decision.group_key)) is not None:
                        return existing
                    await repo.insert(s, final)
                    if alert is not None:
                        repo.add_alert(s, incident_id, alert, now)
                    for approver, role in votes:
                        repo.add_verdict(
                            s, incident_id, approver=approver.name, role=role, verdict="approve", via="break-glass",
                            comment="", at=now,
                        )  # fmt: skip
                    view = await self._write(s, incident_id, steps, new_incident=True)
                    self._publish.decision(s, incident_id, decision)
            except ConstraintError as exc:
                if exc.constraint != OPEN_GROUP_INDEX:
                    raise
                return await self._opened_meanwhile(decision, join_group=join_group)
            log.info("incident opened", state=final.state.value, action=decision.action.value)
        self._after(_combined(steps))
        return view

    async def _opened_meanwhile(self, decision: Decision, *, join_group: bool) -> str:
        """Another writer opened the group's incident first (the database's unique index said so).

        A decision joins that incident; a break-glass request is refused naming it, because
        its approvals were given for a new incident, not for one already under way.
        """
        async with self._store.transaction() as s:
            existing = await repo.find_open(s, decision.group_key)
        if existing is None:  # opened and closed again meanwhile: the caller starts over
            raise ConcurrentUpdateError(decision.group_key)
        if not join_group:
            targets = ", ".join(str(t) for t in decision.targets)
            raise InvalidTransitionError(f"incident {existing} is already open for {targets}")
        log.info("joined an incident another writer opened first", incident_id=existing)
        return existing

    async def on_alert_resolved(self, alert: Alert) -> list[IncidentView]:
        """The alert cleared: every open incident it belongs to hears it."""
        async with self._store.transaction() as s:
            ids = await repo.ids_with_firing_alert(s, alert.fingerprint)
        views = []
        for incident_id in ids:
            event = ev.AlertResolved(at=self._clock.now(), actor=f"alert:{alert.name}", fingerprint=alert.fingerprint)

            async def record(s: AsyncSession, inc: Incident) -> bool:
                if alert.fingerprint in inc.firing:
                    repo.add_alert(s, inc.id, alert, self._clock.now())
                return True

            views.append((await self._apply(incident_id, event, extra=record, strict=False)).view)
        return views

    # --- people --------------------------------------------------------------------------------

    async def _verified_role(self, incident_id: str, approver: str, code: str, role: str | None) -> tuple[str, str]:
        async with self._store.transaction() as s:
            inc, _ = await repo.load(s, incident_id)
        if inc.state not in (State.OPEN, State.AWAITING_APPROVAL, State.ESCALATED):
            raise InvalidTransitionError(f"incident {incident_id} is {inc.state.value}: nothing to approve or reject")
        who = await self.approvers.verify(approver, code)
        return who.name, pick_role(who, inc.decision.approval, inc.missing_roles(), role)

    async def approve(
        self,
        incident_id: str,
        approver: str,
        code: str,
        *,
        role: str | None = None,
        via: str = "api",
        comment: str = "",
    ) -> IncidentView:
        """Verify ``code`` and count the approval for one role; the rollback starts at quorum."""
        with bound_contextvars(incident_id=incident_id):
            name, chosen = await self._verified_role(incident_id, approver, code, role)
            event = ev.Approved(at=self._clock.now(), actor=name, approver=name, role=chosen, via=via)
            return (await self._apply(incident_id, event, extra=self._verdict(event, "approve", comment))).view

    async def reject(
        self,
        incident_id: str,
        approver: str,
        code: str,
        *,
        role: str | None = None,
        via: str = "api",
        comment: str = "",
    ) -> IncidentView:
        """Verify ``code`` and stop the action: the incident ends rejected."""
        with bound_contextvars(incident_id=incident_id):
            name, chosen = await self._verified_role(incident_id, approver, code, role)
            event = ev.Rejected(at=self._clock.now(), actor=name, approver=name, role=chosen, via=via, comment=comment)
            return (await self._apply(incident_id, event, extra=self._verdict(event, "reject", comment))).view

    async def reject_verified(
        self, incident_id: str, approver: str, *, via: str, role: str | None = None, comment: str = ""
    ) -> IncidentView:
        """Reject on behalf of an approver whose identity the caller has already verified.

        For callbacks that prove who pressed the button (a signed Slack interaction
        mapped to a configured approver). Rejecting is the fail-safe direction — it
        stops an action — so it needs no code there; approving always does.
        """
        with bound_contextvars(incident_id=incident_id):
            async with self._store.transaction() as s:
                inc, _ = await repo.load(s, incident_id)
            if inc.state not in (State.OPEN, State.AWAITING_APPROVAL, State.ESCALATED):
                raise InvalidTransitionError(f"incident {incident_id} is {inc.state.value}: nothing to reject")
            who = self.approvers.by_name.get(approver)
            if who is None:
                raise NotPermittedError(f"{approver} is not a configured approver")
            chosen = pick_role(who, inc.decision.approval, inc.missing_roles(), role)
            event = ev.Rejected(
                at=self._clock.now(), actor=who.name, approver=who.name, role=chosen, via=via, comment=comment
            )
            return (await self._apply(incident_id, event, extra=self._verdict(event, "reject", comment))).view

    def _verdict(self, event: ev.Approved | ev.Rejected, verdict: str, comment: str) -> Extra:
        async def write(s: AsyncSession, inc: Incident) -> bool:
            if transition(inc, event, self.policy).__class__ is Transition:
                repo.add_verdict(
                    s, inc.id, approver=event.approver, role=event.role, verdict=verdict, via=event.via,
                    comment=comment, at=event.at,
                )  # fmt: skip
            return True

        return write

    async def acknowledge(self, incident_id: str, actor: str, *, via: str = "api") -> IncidentView:
        """Stop escalation and re-notification; idempotent; the other channels hear about it."""
        with bound_contextvars(incident_id=incident_id):
            applied = await self._apply(incident_id, ev.Acknowledged(at=self._clock.now(), actor=actor, via=via))
            if isinstance(applied.result, Transition):
                ACKS.labels(via=via).inc()
            return applied.view

    async def resolve(self, incident_id: str, actor: str, reason: str = "") -> IncidentView:
        event = ev.ManualResolve(at=self._clock.now(), actor=actor, reason=reason)
        return (await self._apply(incident_id, event)).view

    async def manual_rollback(
        self, targets: Sequence[Target], reason: str, approvals: Sequence[tuple[str, str]], *, via: str = "api"
    ) -> IncidentView:
        """Break-glass (seed 8.2): every code verified, the manual quorum met, then an incident that rolls back."""
        if not targets or not approvals:
            raise NotPermittedError("a manual rollback needs at least one target and one approver")
        names = [n for n, _ in approvals]
        if len(set(names)) != len(names):
            raise NotPermittedError("each approver may approve a manual rollback once")
        requirement = self._manual_requirement()
        decision = Decision(
            rule=MANUAL_RULE, severity=Severity.P0, action=ActionKind.ROLLBACK_NOW, targets=tuple(targets),
            approval=requirement, reason=reason,
        )  # fmt: skip
        verified = [await self.approvers.verify(name, code) for name, code in approvals]
        probe = Incident("probe", decision, State.AWAITING_APPROVAL, self._clock.now(), self._clock.now())
        votes: list[tuple[Approver, str]] = []
        for who in verified:
            role = pick_role(who, requirement, probe.missing_roles(), None)
            probe = replace(probe, approvals=(*probe.approvals, Vote(who.name, role, probe.opened_at)))
            votes.append((who, role))
        log.info("break-glass rollback requested", targets=[str(t) for t in targets], via=via)
        opened = await self._open(decision, None, votes)
        if isinstance(opened, str):  # pragma: no cover - only join_group answers with an existing incident
            raise ConcurrentUpdateError(opened)
        return opened

    # --- reading -------------------------------------------------------------------------------

    async def get(self, incident_id: str) -> IncidentView:
        async with self._store.transaction() as s:
            return await repo.view(s, incident_id)

    # --- timers, rollbacks, restart ------------------------------------------------------------

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
            await self._apply(incident_id, event, extra=claim, strict=False)

    async def resume(self) -> list[str]:
        """At start-up: re-drive incidents left approved, rolling back or verifying. Timers live in the store."""
        ids = await self._redrive()
        log.info("incidents resumed", redriven=len(ids), next_timer=str(await self.timers.next_due()))
        return ids

    async def _redrive(self) -> list[str]:
        async with self._store.transaction() as s:
            ids = await repo.ids_in_states(s, DRIVEN)
        for incident_id in ids:
            self._spawn(incident_id)
        return ids

    def _spawn(self, incident_id: str, known: Incident | None = None) -> None:
        """Drive ``incident_id``; ``known`` is its value as just committed, which spares a reload."""
        if not self._is_leader() or incident_id in self._inflight:
            return
        self._inflight.add(incident_id)
        task = asyncio.create_task(self._drive(incident_id, known), name=f"rollback:{incident_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("rollback driver crashed", task=task.get_name(), error=repr(task.exception()))

    async def _drive(self, incident_id: str, known: Incident | None) -> None:
        """Drive until the incident settles; a passing failure (the store down) is retried, capped.

        Driving again is safe: the executor's intents make an undo that already happened
        ALREADY_DONE. A replica that stopped leading leaves the rest to the new leader.
        """
        attempt = 0
        try:
            with bound_contextvars(incident_id=incident_id):
                while True:
                    try:
                        await self._drive_once(incident_id, known)
                    except TemporaryError as exc:
                        attempt += 1
                        if not self._is_leader():
                            log.warning("not leading any more: the new leader drives the rollback", error=str(exc))
                            return
                        delay = min(_DRIVE_BACKOFF_CAP_S, 0.5 * 2**attempt)
                        log.warning("rollback driver will retry", error=str(exc), reason=exc.reason, delay_s=delay)
                        await self._clock.sleep(delay)
                        known = None  # reload: the state may have moved meanwhile
                    else:
                        return
        finally:
            self._inflight.discard(incident_id)

    async def _drive_once(self, incident_id: str, known: Incident | None = None) -> None:
        state, decision = (known.state, known.decision) if known is not None else await self._current(incident_id)
        if state is State.APPROVED:
            applied = await self._apply(incident_id, ev.RollbackStarted(at=self._clock.now()), strict=False)
            state, decision = State(applied.view.state), Decision.from_json(applied.view.decision)
        if state not in (State.ROLLING_BACK, State.VERIFYING):
            return
        req = RollbackRequest(
            incident_id=incident_id,
            targets=decision.targets,
            reason=f"{decision.rule}: {decision.reason}" if decision.reason else decision.rule,
            automatic=decision.rule != MANUAL_RULE,
            to_revision=decision.to_revision,
            verify=decision.verify,
        )
        try:
            outcome = await self._executor.execute(req)
        except TemporaryError:
            raise  # nothing was decided: ``_drive`` tries again
        except RollbackdError as exc:
            failed = ev.RollbackFinished(at=self._clock.now(), ok=False, detail=str(exc))
            await self._finish(incident_id, failed, extra=self._published_failure(str(exc), automatic=req.automatic))
            return
        results = tuple(
            {"target": str(t.target), "result": t.result.value, "from": t.from_revision, "to": t.to_revision,
             "detail": t.detail}
            for t in outcome.targets
        )  # fmt: skip
        ok = bool(outcome.targets) and all(t.result in _GOOD for t in outcome.targets)
        detail = "; ".join(_describe_outcome(t) for t in outcome.targets) or "no targets"
        await self._finish(
            incident_id,
            ev.RollbackFinished(at=self._clock.now(), ok=ok, detail=detail, results=results),
            extra=self._published_actions(outcome.targets, automatic=req.automatic),
        )
        if ok:
            check: ev.Event = (
                ev.VerificationFailed(at=self._clock.now(), detail=outcome.verify_detail)
                if outcome.verified is False
                else ev.VerificationPassed(
                    at=self._clock.now(),
                    detail=outcome.verify_detail or ("" if outcome.verified else "none configured"),
                )
            )
            await self._finish(incident_id, check)

    async def _current(self, incident_id: str) -> tuple[State, Decision]:
        async with self._store.transaction() as s:
            inc, _ = await repo.load(s, incident_id)
        return inc.state, inc.decision

    async def _finish(self, incident_id: str, event: ev.Event, *, extra: Extra | None = None) -> None:
        await self._apply(incident_id, event, extra=extra, strict=False)

    def _published_actions(self, outcomes: Sequence[TargetOutcome], *, automatic: bool) -> Extra:
        # Written with RollbackFinished, even if the incident moved on meanwhile: the cluster did change.
        async def write(s: AsyncSession, inc: Incident) -> bool:
            self._publish.actions(s, inc.id, outcomes, automatic=automatic)
            return True

        return write

    def _published_failure(self, detail: str, *, automatic: bool) -> Extra:
        async def write(s: AsyncSession, inc: Incident) -> bool:
            self._publish.failed(s, inc, detail, automatic=automatic)
            return True

        return write

    async def idle(self) -> None:
        """Wait until every rollback started so far has finished (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel running drivers; the store keeps their state and ``resume`` picks them up."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def list(self, state: str | None = None, open_only: bool = False, limit: int = 100) -> list[IncidentView]:
        async with self._store.transaction() as s:
            ids = await repo.list_ids(s, state=state, open_only=open_only, limit=max(1, min(limit, 1000)))
            return [await repo.view(s, i, with_timeline=False) for i in ids]


def _combined(steps: Sequence[Step]) -> Transition:
    """The steps of one transaction as one transition: the last value, every effect in order."""
    return Transition(steps[-1][1].incident, tuple(e for _, t, _ in steps for e in t.effects))


def _describe_outcome(t: TargetOutcome) -> str:
    """One target's result as a responder reads it: what moved from which revision to which."""
    what = t.result.value.replace("_", " ")
    if t.from_revision is not None and t.to_revision is not None:
        return f"{t.target} {what}: revision {t.from_revision} → revision {t.to_revision}"
    return f"{t.target} {what}" + (f" ({t.detail})" if t.detail else "")
