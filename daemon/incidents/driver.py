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
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.contextvars import bound_contextvars

from daemon.clock import Clock
from daemon.errors import RollbackdError, TemporaryError
from daemon.incidents import events as ev
from daemon.incidents import repo
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
    ) -> None:
        self._store = store
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
        await self._finished(incident_id, outcome, automatic=req.automatic)

    async def _finished(self, incident_id: str, outcome: RollbackOutcome, *, automatic: bool) -> None:
        """Record what the executor did, then (when it worked) what the verification found."""
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
            extra=self._publishing(
                lambda s, inc: self._publish.actions(s, inc.id, outcome.targets, automatic=automatic)
            ),
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

    @staticmethod
    def _publishing(publish: Callable[[AsyncSession, Incident], None]) -> Extra:
        # Written with RollbackFinished, even if the incident moved on meanwhile: the cluster did change.
        async def write(s: AsyncSession, inc: Incident) -> bool:
            publish(s, inc)
            return True

        return write


def _describe_outcome(t: TargetOutcome) -> str:
    """One target's result as a responder reads it: what moved from which revision to which."""
    what = t.result.value.replace("_", " ")
    if t.from_revision is not None and t.to_revision is not None:
        return f"{t.target} {what}: revision {t.from_revision} → revision {t.to_revision}"
    return f"{t.target} {what}" + (f" ({t.detail})" if t.detail else "")
