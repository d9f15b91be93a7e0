"""People: what responders do to an incident — approve, reject, acknowledge, resolve.

The API, the CLI, Slack buttons and PagerDuty webhooks call these through the
``IncidentService`` facade. A verdict is verified first (``approvals``: the
code, or an identity the caller already proved), then becomes one event for
the machine through ``incidents.write.Writer``, with its verdict row in the
same transaction. A rejection always works for an authorised approver: it stops
an action, which is the fail-safe direction.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bound_contextvars

from daemon.clock import Clock
from daemon.incidents import events as ev
from daemon.incidents import repo
from daemon.incidents.approvals import Approver, Approvers, check_not_author, pick_role, veto_role
from daemon.incidents.errors import InvalidTransitionError, NotPermittedError
from daemon.incidents.machine import Incident, State, Transition, transition
from daemon.incidents.record import IncidentRecord
from daemon.incidents.write import Writer
from daemon.metrics import ACKS
from daemon.store.db import Store


class How(TypedDict, total=False):
    """How a verdict was given: the role it counts for, the channel, a comment for the record."""

    role: str | None
    via: str
    comment: str


# Where approvals and rejections still count: before any action ran.
_VOTING = (State.OPEN, State.AWAITING_APPROVAL, State.ESCALATED)


class People:
    """Verdicts, acknowledgements and manual resolution, each one event through the writer."""

    def __init__(self, store: Store, clock: Clock, writer: Writer, approvers: Approvers) -> None:
        self._store = store
        self._clock = clock
        self._writer = writer
        self._approvers = approvers

    async def approve(self, incident_id: str, approver: str, code: str, **how: Unpack[How]) -> IncidentRecord:
        """Verify ``code`` and count the approval for one role; the rollback starts at quorum."""
        return await self._coded(incident_id, approver, code, reject=False, **how)

    async def reject(self, incident_id: str, approver: str, code: str, **how: Unpack[How]) -> IncidentRecord:
        """Verify ``code`` and stop the action: the incident ends rejected."""
        return await self._coded(incident_id, approver, code, reject=True, **how)

    async def _coded(
        self, incident_id: str, approver: str, code: str, *, reject: bool, role: str | None = None, via: str = "api",
        comment: str = "",
    ) -> IncidentRecord:  # fmt: skip
        with bound_contextvars(incident_id=incident_id):
            inc = await self._voting(incident_id, "approve or reject")
            if not reject and any(v.approver == approver for v in inc.approvals):
                # A second press is answered plainly, before any code is checked or a TOTP step spent.
                raise InvalidTransitionError(f"{approver} has already approved incident {incident_id}")
            who = await self._approvers.verify(approver, code)
            if reject:
                return await self._reject(inc, who, role=role, via=via, comment=comment)
            check_not_author(who, inc.decision.approval, inc.decision.deploy)
            chosen = pick_role(who, inc.decision.approval, inc.missing_roles(), role)
            event = ev.Approved(at=self._clock.now(), actor=who.name, approver=who.name, role=chosen, via=via)
            return await self._verdict(incident_id, event, "approve", comment)

    async def reject_verified(
        self, incident_id: str, approver: str, *, via: str, role: str | None = None, comment: str = ""
    ) -> IncidentRecord:
        """Reject on behalf of an approver whose identity the caller has already verified.

        For callbacks that prove who pressed the button (a signed Slack interaction
        mapped to a configured approver). Rejecting is the fail-safe direction — it
        stops an action — so it needs no code there; approving always does.
        """
        with bound_contextvars(incident_id=incident_id):
            inc = await self._voting(incident_id, "reject")
            who = self._approvers.by_name.get(approver)
            if who is None:
                raise NotPermittedError(f"{approver} is not a configured approver")
            return await self._reject(inc, who, role=role, via=via, comment=comment)

    async def acknowledge(self, incident_id: str, actor: str, *, via: str = "api") -> IncidentRecord:
        """Stop escalation and re-notification; idempotent; the other channels hear about it."""
        with bound_contextvars(incident_id=incident_id):
            event = ev.Acknowledged(at=self._clock.now(), actor=actor, via=via)
            applied = await self._writer.apply(incident_id, event)
            if isinstance(applied.result, Transition):
                ACKS.labels(via=via).inc()
            return applied.record

    async def resolve(self, incident_id: str, actor: str, reason: str = "") -> IncidentRecord:
        event = ev.ManualResolve(at=self._clock.now(), actor=actor, reason=reason)
        return (await self._writer.apply(incident_id, event)).record

    async def _voting(self, incident_id: str, what: str) -> Incident:
        """The incident, if a verdict can still count on it; checked before any code is."""
        async with self._store.transaction() as s:
            inc, _ = await repo.load(s, incident_id)
        if inc.state not in _VOTING:
            raise InvalidTransitionError(f"incident {incident_id} is {inc.state.value}: nothing to {what}")
        return inc

    async def _reject(
        self, inc: Incident, who: Approver, *, role: str | None, via: str, comment: str
    ) -> IncidentRecord:
        chosen = veto_role(who, inc.decision.approval, inc.missing_roles(), role)
        at = self._clock.now()
        event = ev.Rejected(at=at, actor=who.name, approver=who.name, role=chosen, via=via, comment=comment)
        return await self._verdict(inc.id, event, "reject", comment)

    async def _verdict(
        self, incident_id: str, event: ev.Approved | ev.Rejected, verdict: str, comment: str
    ) -> IncidentRecord:
        """The event, with its verdict row when the machine accepts it (one transaction)."""

        async def row(s: AsyncSession, inc: Incident) -> bool:
            if isinstance(transition(inc, event, self._writer.policy), Transition):
                repo.add_verdict(
                    s, inc.id, approver=event.approver, role=event.role, verdict=verdict, via=event.via,
                    comment=comment, at=event.at,
                )  # fmt: skip
            return True

        return (await self._writer.apply(incident_id, event, extra=row)).record
