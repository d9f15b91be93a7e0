"""Intake: what opens, joins and clears incidents — decisions and resolved alerts from the pipeline, break-glass.

``pipeline`` hands each decision and each resolved alert to ``Intake``; the API
and the CLI hand it break-glass requests (seed 8.2). Every change goes through
``incidents.write.Writer``: a decision joins the open incident of its group or
opens one (the database's one-open-per-group index settles two writers), and a
resolved alert is heard by every open incident it joined.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bound_contextvars

from daemon.clock import Clock
from daemon.incidents import events as ev
from daemon.incidents import repo
from daemon.incidents.approvals import Approver, Approvers, pick_role
from daemon.incidents.errors import ConcurrentUpdateError, InvalidTransitionError, NotPermittedError
from daemon.incidents.machine import MANUAL_RULE, Ignored, Incident, State, Vote, open_incident, transition
from daemon.incidents.publish import Publications
from daemon.incidents.read import build_record
from daemon.incidents.record import IncidentRecord
from daemon.incidents.write import ATTEMPTS, SUPERSEDED, NewIncident, Step, Writer
from daemon.logs import get_logger
from daemon.model import ActionKind, Alert, ApprovalRequirement, Decision, Severity, Target
from daemon.store.db import Store
from daemon.store.errors import ConstraintError
from daemon.store.tables import OPEN_GROUP_INDEX

log = get_logger(__name__)

BREAK_GLASS = "break-glass"


class Intake:
    """Opens and joins incidents for decisions; closes pre-action incidents whose alerts cleared."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        writer: Writer,
        approvers: Approvers,
        publish: Publications,
        *,
        manual_rollback: Callable[[], ApprovalRequirement],
        on_notify: Callable[[], None] | None,
        manual_forced_after: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._writer = writer
        self._approvers = approvers
        self._publish = publish
        self._manual_requirement = manual_rollback
        # manual_rollback.forced_rollback.after: break-glass approved by that quorum may force a stuck pod.
        self._manual_forced_after = manual_forced_after
        self._on_notify = on_notify

    async def on_decision(self, decision: Decision, alert: Alert) -> IncidentRecord:
        """``decide``, answered with the record: as committed for a new incident, as it stands for a join."""
        decided = await self.decide(decision, alert)
        if isinstance(decided, IncidentRecord):
            return decided
        async with self._store.transaction() as s:
            return await build_record(s, decided)

    async def decide(self, decision: Decision, alert: Alert) -> IncidentRecord | str:
        """A decision for ``alert``: join the open incident of its group (its id), or open a new one (its record).

        The pipeline's path. A join builds no record unless a notification carries
        one: in a storm of alerts on open incidents, reading it back was half the work.
        """
        with bound_contextvars(rule=decision.rule):
            for _ in range(ATTEMPTS):
                existing = await self._open(decision, alert, join_group=True)
                if isinstance(existing, IncidentRecord):
                    return existing

                async def join(s: AsyncSession, inc: Incident) -> bool:
                    if not inc.open:
                        return False
                    if alert.fingerprint not in inc.firing:
                        repo.add_alert(s, inc.id, alert, self._clock.now())
                    self._publish.decision(s, inc.id, decision)
                    return True

                event = ev.Decided(at=self._clock.now(), actor=f"rule:{decision.rule}", fingerprint=alert.fingerprint)
                joined = await self._writer.apply_unrecorded(existing, event, extra=join)
                if self._publish.enabled and self._on_notify is not None:
                    self._on_notify()  # a join may change nothing else, yet its decision event is due
                if not (isinstance(joined, Ignored) and joined == SUPERSEDED):
                    return existing  # else it closed meanwhile: open a new one
            raise ConcurrentUpdateError(decision.group_key)

    async def on_alert_resolved(self, alert: Alert) -> list[IncidentRecord]:
        """The alert cleared: every open incident it belongs to hears it."""
        async with self._store.transaction() as s:
            ids = await repo.ids_with_firing_alert(s, alert.fingerprint)
        records = []
        for incident_id in ids:
            event = ev.AlertResolved(at=self._clock.now(), actor=f"alert:{alert.name}", fingerprint=alert.fingerprint)

            async def resolved(s: AsyncSession, inc: Incident) -> bool:
                if alert.fingerprint in inc.firing:
                    repo.add_alert(s, inc.id, alert, self._clock.now())
                return True

            records.append((await self._writer.apply(incident_id, event, extra=resolved, strict=False)).record)
        return records

    async def manual_rollback(
        self,
        targets: Sequence[Target],
        reason: str,
        approvals: Sequence[tuple[str, str]],
        *,
        via: str = "api",
        to_revision: int | None = None,
    ) -> IncidentRecord:
        """Break-glass (seed 8.2): every code verified, the manual quorum met, then an incident that rolls back.

        ``to_revision`` is kubectl's ``--to-revision``; None undoes to the previous revision.
        """
        if not targets or not approvals:
            raise NotPermittedError("a manual rollback needs at least one target and one approver")
        names = [n for n, _ in approvals]
        if len(set(names)) != len(names):
            raise NotPermittedError("each approver may approve a manual rollback once")
        requirement = self._manual_requirement()
        decision = Decision(
            rule=MANUAL_RULE, severity=Severity.P0, action=ActionKind.ROLLBACK_NOW, targets=tuple(targets),
            approval=requirement, reason=reason, to_revision=to_revision,
            forced_rollback_after_s=self._manual_forced_after(),
        )  # fmt: skip
        verified = [await self._approvers.verify(name, code) for name, code in approvals]
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

    def _steps(
        self, incident_id: str, decision: Decision, alert: Alert | None, votes: Sequence[tuple[Approver, str]]
    ) -> list[Step]:
        """The machine's steps for a new incident: opening, then each break-glass vote."""
        now = self._clock.now()
        fingerprint = alert.fingerprint if alert else ""
        t = open_incident(incident_id, decision, fingerprint, now, self._writer.policy)
        steps: list[Step] = [(State.OPEN, t, ev.Decided(at=now, fingerprint=fingerprint))]
        for approver, role in votes:
            vote = ev.Approved(at=now, actor=approver.name, approver=approver.name, role=role, via=BREAK_GLASS)
            nxt = transition(steps[-1][1].incident, vote, self._writer.policy)
            if isinstance(nxt, Ignored):
                raise NotPermittedError(f"approval by {approver.name} does not count: {nxt.reason}")
            steps.append((steps[-1][1].incident.state, nxt, vote))
        final = steps[-1][1].incident
        if votes and final.state is not State.APPROVED:
            still = ", ".join(f"{n}x {r}" for r, n in final.missing_roles().items())
            raise NotPermittedError(f"the manual-rollback quorum is not met; still needed: {still}")
        return steps

    async def _open(
        self,
        decision: Decision,
        alert: Alert | None,
        votes: Sequence[tuple[Approver, str]] = (),
        *,
        join_group: bool = False,
    ) -> IncidentRecord | str:
        """A new incident; with ``join_group``, the id of the group's open incident instead if there is one."""
        incident_id = secrets.token_hex(6)
        steps = self._steps(incident_id, decision, alert, votes)
        now = self._clock.now()

        def rows(s: AsyncSession) -> None:
            if alert is not None:
                repo.add_alert(s, incident_id, alert, now)
            for approver, role in votes:
                repo.add_verdict(
                    s, incident_id, approver=approver.name, role=role, verdict="approve", via=BREAK_GLASS,
                    comment="", at=now,
                )  # fmt: skip
            self._publish.decision(s, incident_id, decision)

        with bound_contextvars(incident_id=incident_id):
            try:
                if join_group:  # the pipeline's openings, many at once in a storm: they share transactions
                    opened = await self._writer.open_or_join(NewIncident(steps, rows, decision.group_key))
                else:
                    opened = await self._writer.create(steps, rows=rows)
            except ConstraintError as exc:
                if exc.constraint != OPEN_GROUP_INDEX:
                    raise
                return await self._opened_meanwhile(decision, join_group=join_group)
            if isinstance(opened, str):
                return opened
            log.info("incident opened", state=opened.record.state.value, action=decision.action.value)
        return opened.record

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
