"""The rollback driver: takes an approved incident through rolling back and verifying, on the leader.

``incidents.write`` reports each committed change; when one starts a rollback,
``Driver.spawn`` runs it in a task after the commit. At start-up (and on each
timer pass, for incidents approved through another replica's API) ``redrive``
picks up incidents left approved, rolling back or verifying. The executor
(``actions``, behind the ``Executor`` protocol) is idempotent per incident and
target, so driving again after a crash never rolls back twice. A passing
failure (``TemporaryError``: the store or the apiserver down) is retried with
capped backoff; a replica that stopped leading leaves the rest to the new leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bound_contextvars

from daemon.clock import Clock
from daemon.control.guard import AutomationGuard
from daemon.control.hold import ONE_ATTEMPT, ONE_ATTEMPT_REFUSAL, Hold
from daemon.errors import RollbackdError, TemporaryError
from daemon.incidents import events as ev
from daemon.incidents import repo
from daemon.incidents.kube_events import KubeEvents
from daemon.incidents.machine import MANUAL_RULE, Incident, State
from daemon.incidents.publish import Publications
from daemon.incidents.write import Extra, Writer
from daemon.logs import get_logger
from daemon.model import RollbackOutcome, RollbackRequest, TargetOutcome, TargetResult
from daemon.store.db import Store

log = get_logger(__name__)

_DRIVE_BACKOFF_CAP_S = 5.0
DRIVEN = (State.APPROVED.value, State.ROLLING_BACK.value, State.VERIFYING.value)
_GOOD = {TargetResult.ROLLED_BACK, TargetResult.ALREADY_DONE, TargetResult.DRY_RUN}


class Executor(Protocol):
    """What ``actions`` offers: roll back once per incident and target; safe to call again."""

    async def execute(self, req: RollbackRequest) -> RollbackOutcome: ...


class Driver:
    """Runs one task per incident being rolled back; ``idle`` waits for them, ``close`` cancels them."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        writer: Writer,
        executor: Executor,
        publish: Publications,
        *,
        is_leader: Callable[[], bool],
        guard: AutomationGuard | None = None,
        events: KubeEvents | None = None,
    ) -> None:
        self._events = events or KubeEvents(enabled=False)  # Kubernetes Events on the targets
        self._store = store
        self._guard = guard  # None: nothing holds an automated rollback (tests of the bare driver)
        self._clock = clock
        self._writer = writer
        self._executor = executor
        self._publish = publish
        self._is_leader = is_leader
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()

    async def redrive(self) -> list[str]:
        """Drive every incident left approved, rolling back or verifying; their ids."""
        async with self._store.transaction() as s:
            ids = await repo.ids_in_states(s, DRIVEN)
        for incident_id in ids:
            self.spawn(incident_id)
        return ids

    def spawn(self, incident_id: str, known: Incident | None = None) -> None:
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

    async def idle(self) -> None:
        """Wait until every rollback started so far has finished (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel running drivers; the store keeps their state and ``redrive`` picks them up."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
        inc = known if known is not None else await self._current(incident_id)
        state, decision = inc.state, inc.decision
        if await self._held(inc):
            return
        if state is State.APPROVED:
            applied = await self._writer.apply(incident_id, ev.RollbackStarted(at=self._clock.now()), strict=False)
            state, decision = applied.record.state, applied.record.decision
        if state not in (State.ROLLING_BACK, State.VERIFYING):
            return
        req = RollbackRequest(
            incident_id=incident_id,
            targets=decision.targets,
            reason=f"{decision.rule}: {decision.reason}" if decision.reason else decision.rule,
            automatic=decision.rule != MANUAL_RULE,
            to_revision=decision.to_revision,
            verify=decision.verify,
            forced_rollback_after_s=decision.forced_rollback_after_s,
            opened_at=inc.opened_at,  # for the decision-to-patch latency the executor observes
        )
        try:
            outcome = await self._executor.execute(req)
        except TemporaryError:
            raise  # nothing was decided: ``_drive`` tries again
        except RollbackdError as exc:
            why = str(exc)
            failed = ev.RollbackFinished(at=self._clock.now(), ok=False, detail=why)
            publish = self._publishing(lambda s, inc: self._publish.failed(s, inc, why, automatic=req.automatic))
            await self._finish(incident_id, failed, extra=publish)
            return
        once = [t for t in outcome.targets if t.detail.startswith(ONE_ATTEMPT_REFUSAL)]
        if req.automatic and once and all(t.result is TargetResult.REFUSED for t in outcome.targets):
            # Refused before anything was written: the same bad revision again notifies and escalates.
            detail = f"would roll back again: {'; '.join(f'{t.target}: {t.detail}' for t in once)}"
            await self._record_hold(inc.id, ONE_ATTEMPT, detail, outcome.targets)
            return
        await self._finished(incident_id, outcome, automatic=req.automatic)

    async def _held(self, inc: Incident) -> bool:
        """Ask the guard right before an automated rollback starts; a rollback under way is never held half-way.

        On the leader the opening transaction already moved a no-approval incident to rolling_back
        (``Writer.with_start``); it has not started as long as the executor has no intent for it.
        """
        guard, decision = self._guard, inc.decision
        if guard is None or decision.rule == MANUAL_RULE or inc.state not in (State.APPROVED, State.ROLLING_BACK):
            return False
        hold = await guard.check(decision, unless_started=inc.id if inc.state is State.ROLLING_BACK else None)
        if hold is None:
            return False
        await self._hold(inc, hold)
        return True

    async def _hold(self, inc: Incident, hold: Hold) -> None:
        """A guard holds the rollback: dry-run the undo on the API server for what it would do, then record it.

        The dry run writes nothing (the API server validates the patch and discards it); its answer
        is the "would roll back …" people are told, and what the shadow report counts.
        """
        assert self._guard is not None  # noqa: S101 - only called when a guard held
        d = inc.decision
        req = RollbackRequest(
            incident_id=inc.id, targets=d.targets, reason=f"{d.rule} (held: {hold.guard})", automatic=True,
            to_revision=d.to_revision, dry_run=True, opened_at=None,
        )  # fmt: skip
        try:
            outcomes = (await self._executor.execute(req)).targets
            would = "; ".join(_describe_would(t) for t in outcomes)
        except TemporaryError:
            raise  # nothing recorded yet: ``_drive`` tries again
        except RollbackdError as exc:
            outcomes, would = (), f"the dry run failed: {exc}"
        await self._record_hold(inc.id, hold.guard, f"would roll back {would}: {hold.detail}", outcomes)

    async def _record_hold(
        self, incident_id: str, guard_name: str, detail: str, outcomes: Sequence[TargetOutcome]
    ) -> None:
        """The hold on the incident (escalated, or open for a shadow rule) and its row, in one transaction."""
        guard, results = self._guard, [_result_json(t) for t in outcomes]
        assert guard is not None  # noqa: S101 - only called when a guard held

        async def record(s: AsyncSession, current: Incident) -> bool:
            if current.state not in (State.APPROVED, State.ROLLING_BACK):
                return False  # moved on meanwhile (resolved, rejected): nothing to hold
            self._events.held(s, current, outcomes, detail, self._clock.now())
            targets = [str(t) for t in current.decision.targets]
            guard.record(
                s, current.id, current.decision, Hold(guard_name, detail), {"targets": targets, "results": results}
            )
            return True

        event = ev.RollbackHeld(at=self._clock.now(), actor=f"guard:{guard_name}", guard=guard_name, detail=detail)
        await self._writer.apply(incident_id, event, extra=record, strict=False)

    async def _finished(self, incident_id: str, outcome: RollbackOutcome, *, automatic: bool) -> None:
        """Record what the executor did, then (when it worked) what the verification found."""
        results = tuple(_result_json(t) for t in outcome.targets)
        ok = bool(outcome.targets) and all(t.result in _GOOD for t in outcome.targets)
        detail = "; ".join(_describe_outcome(t) for t in outcome.targets) or "no targets"
        await self._finish(
            incident_id,
            ev.RollbackFinished(at=self._clock.now(), ok=ok, detail=detail, results=results),
            extra=self._publishing(lambda s, inc: self._published(s, inc, outcome.targets, automatic=automatic)),
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

    async def _current(self, incident_id: str) -> Incident:
        async with self._store.transaction() as s:
            inc, _ = await repo.load(s, incident_id)
        return inc

    async def _finish(self, incident_id: str, event: ev.Event, *, extra: Extra | None = None) -> None:
        await self._writer.apply(incident_id, event, extra=extra, strict=False)

    def _published(self, s: AsyncSession, inc: Incident, outcomes: Sequence[TargetOutcome], *, automatic: bool) -> None:
        """The rollback's result for other systems: Kafka's action events and the targets' Kubernetes Events."""
        self._publish.actions(s, inc.id, outcomes, automatic=automatic)
        self._events.outcomes(s, inc, outcomes, self._clock.now())

    @staticmethod
    def _publishing(publish: Callable[[AsyncSession, Incident], None]) -> Extra:
        # Written with RollbackFinished, even if the incident moved on meanwhile: the cluster did change.
        async def write(s: AsyncSession, inc: Incident) -> bool:
            publish(s, inc)
            return True

        return write


def _describe_outcome(t: TargetOutcome) -> str:
    """One target's result as a responder reads it: what moved from which revision to which, and a forced rollback."""
    what = t.result.value.replace("_", " ")
    forced = f"; {t.forced}" if t.forced else ""
    if t.from_revision is not None and t.to_revision is not None:
        return f"{t.target} {what}: revision {t.from_revision} → revision {t.to_revision}{forced}"
    return f"{t.target} {what}" + (f" ({t.detail})" if t.detail else forced)


def _result_json(t: TargetOutcome) -> dict[str, object]:
    return {"target": str(t.target), "result": t.result.value, "from": t.from_revision, "to": t.to_revision,
            "detail": t.detail}  # fmt: skip


def _describe_would(t: TargetOutcome) -> str:
    """What a held rollback would have done to one target, from the API server's dry run."""
    if t.result is TargetResult.DRY_RUN and t.from_revision is not None and t.to_revision is not None:
        return f"{t.target} revision {t.from_revision} → {t.to_revision}"
    return f"{t.target} ({t.result.value.replace('_', ' ')}" + (f": {t.detail})" if t.detail else ")")
