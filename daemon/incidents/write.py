"""The one write path of the incident stage: every change to an incident goes through ``Writer``.

A change is one transaction: take the incident as it stands (``apply`` loads it
with its version; ``create`` starts from the machine's ``open_incident``), feed
the machine, save the new value only if the version still matches (a new
incident is inserted at version 1, and the database's one-open-per-group index
guards it), then write the effects — audit entries, timers, outbox
notifications — and build the decision record once, all before the commit.
A lost version race or a racing timer row is retried from a fresh load; after
the commit, ``on_commit`` hears the result (the driver starts the rollback, the
outbox worker wakes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from sqlalchemy.ext.asyncio import AsyncSession

from daemon.clock import Clock
from daemon.errors import TemporaryError
from daemon.incidents import events as ev
from daemon.incidents import repo
from daemon.incidents.errors import ConcurrentUpdateError, InvalidTransitionError
from daemon.incidents.machine import Ignored, Incident, Policy, State, Transition, transition
from daemon.incidents.read import build_record, build_records
from daemon.incidents.record import IncidentRecord
from daemon.metrics import APPROVAL_WAIT, TRANSITIONS
from daemon.model import NotificationEvent
from daemon.store.db import Store
from daemon.store.errors import ConstraintError
from daemon.store.group_commit import GroupCommit
from daemon.store.outbox import enqueue_notification
from daemon.store.tables import OPEN_GROUP_INDEX

ATTEMPTS = 6
# Between attempts after losing a race: a short random pause, doubling, so a burst of writers to one
# incident spreads out instead of colliding again. A pause for the database, not a deadline, so it
# is taken on the event loop's clock (a fake clock in tests would never let it end).
_RACE_PAUSE_S = 0.005
# Two writers arming the same timer of one incident at once: the loser reloads and tries again.
_RACY_CONSTRAINTS = frozenset({"timers_incident_id_kind_key"})

# Rows written in the change's transaction; False aborts the change quietly (it was superseded).
Extra = Callable[[AsyncSession, Incident], Awaitable[bool]]
# One applied event: the state before it, what the machine made of it, the event itself.
Step = tuple[State, Transition, ev.Event]
_T = TypeVar("_T")


# What ``apply`` answers when its ``extra`` declined the change: the incident moved on meanwhile.
SUPERSEDED = Ignored("superseded")


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed change: the record as committed, and what the machine made of the event."""

    record: IncidentRecord
    result: Transition | Ignored


@dataclass(frozen=True, slots=True)
class NewIncident:
    """An incident to open unless its group has one open: the machine's steps, and its rows (alerts)."""

    steps: Sequence[Step]
    rows: Callable[[AsyncSession], None]
    group_key: str


@dataclass(frozen=True, slots=True)
class Change:
    """One event for ``Writer.apply_unrecorded``: the incident, the event, the rows written with it."""

    incident_id: str
    event: ev.Event
    rows: Extra | None  # ``apply``'s ``extra``


class _Alone:
    """The answer to every member of a group (of openings, of changes) whose shared transaction failed
    as a lone one may: each goes alone. Its own type, so it cannot be taken for an incident id."""


_ALONE = _Alone()
# What makes a shared transaction give way to lone ones, each with its own retries and errors.
_GIVE_WAY = (ConcurrentUpdateError, ConstraintError, TemporaryError)


def combined(steps: Sequence[Step]) -> Transition:
    """The steps of one transaction as one transition: the last value, every effect in order."""
    return Transition(steps[-1][1].incident, tuple(e for _, t, _ in steps for e in t.effects))


def starts_rollback(result: Transition | Ignored) -> bool:
    return isinstance(result, Transition) and any(isinstance(e, ev.StartRollback) for e in result.effects)


class Writer:
    """Applies events to incidents, one transaction each, with optimistic concurrency between replicas."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        policy: Policy,
        *,
        is_leader: Callable[[], bool],
        notify_channels: tuple[str, ...],
        on_commit: Callable[[Transition | Ignored], None],
        may_hold: Callable[[Incident], bool] = lambda _inc: False,
    ) -> None:
        self._store = store
        self._may_hold = may_hold  # a guard may hold this start (control.guard): leave it approved for the driver
        self._clock = clock
        self.policy = policy
        self._is_leader = is_leader
        # Only channels that have a notifier get outbox rows; others would wait forever.
        self._notify_channels = notify_channels
        self._on_commit = on_commit
        # Openings of different groups at the same moment (a storm on many workloads) share one transaction.
        self._openings: GroupCommit[NewIncident, Applied | str | _Alone] = GroupCommit(self._open_group)
        # So do the alerts joining open incidents, one change each.
        self._changes: GroupCommit[Change, Transition | Ignored | _Alone] = GroupCommit(self._change_group)

    async def apply(
        self, incident_id: str, event: ev.Event, *, extra: Extra | None = None, strict: bool = True
    ) -> Applied:
        """Apply ``event``; ``strict``: an event the state refuses raises InvalidTransitionError."""
        applied = await self._apply(incident_id, event, extra, strict=strict, record=True)
        assert isinstance(applied, Applied)  # noqa: S101 - record=True always builds the record
        return applied

    async def apply_unrecorded(
        self, incident_id: str, event: ev.Event, *, extra: Extra | None = None
    ) -> Applied | Transition | Ignored:
        """``apply`` (not strict) for a caller that needs no record: it is built only if a notification carries it.

        An alert joining an open incident changes nothing a notification reports,
        and the five reads of the record were half of that transaction's statements.
        Concurrent calls share one transaction (``_change_group``); a group that fails
        the way a lone change may (a lost race, the store away) gives way to lone ones.
        """
        answer = await self._changes.submit(Change(incident_id, event, extra))
        if isinstance(answer, _Alone):
            return await self._apply(incident_id, event, extra, strict=False, record=False)
        return answer

    async def _change_group(self, changes: Sequence[Change]) -> Sequence[Transition | Ignored | _Alone]:
        """One transaction for ``changes``: the incidents locked in one query, each saved once, one commit.

        Changes of one incident apply in order to its value as the earlier ones left it;
        a notification carries the incident's record as the transaction commits it.
        """

        async def change(s: AsyncSession) -> list[Transition | Ignored]:
            loaded = await repo.load_many_for_update(s, [c.incident_id for c in changes])
            if len(loaded) < len({c.incident_id for c in changes}):
                raise ConcurrentUpdateError(",".join(c.incident_id for c in changes))  # each alone says which is gone
            current = {i: inc for i, (inc, _) in loaded.items()}
            answers: list[Transition | Ignored] = []
            notes: list[tuple[Incident, ev.Notify]] = []
            for c in changes:
                inc = current[c.incident_id]
                if c.rows is not None and not await c.rows(s, inc):
                    answers.append(SUPERSEDED)
                    continue
                result = transition(inc, c.event, self.policy)
                if isinstance(result, Ignored):
                    answers.append(result)
                    continue
                steps = self.with_start([(inc.state, result, c.event)])
                current[c.incident_id] = steps[-1][1].incident
                notes += await self._write_effects(s, steps, new_incident=False)
                answers.append(combined(steps))
            for incident_id, inc in current.items():
                if inc is not loaded[incident_id][0]:
                    await repo.save(s, inc, loaded[incident_id][1])
            await s.flush()
            noted = sorted({inc.id for inc, _ in notes})
            records = dict(zip(noted, await build_records(s, noted, with_timeline=True), strict=True))
            for inc, note in notes:
                await self._enqueue(s, [(inc, note)], records[inc.id])
            return answers

        try:
            async with self._store.write_lock, self._store.transaction() as s:
                answers = await change(s)
        except _GIVE_WAY:
            return [_ALONE] * len(changes)  # the lone path has the retries and the errors its callers know
        for answer in answers:
            if isinstance(answer, Transition):
                self._on_commit(answer)  # after the commit, as in ``_commit``
        return answers

    async def _apply(
        self, incident_id: str, event: ev.Event, extra: Extra | None, *, strict: bool, record: bool
    ) -> Applied | Transition | Ignored:
        async def change(s: AsyncSession) -> Applied | Transition | Ignored:
            inc, version = await repo.load(s, incident_id, for_update=True)
            if extra is not None and not await extra(s, inc):
                return Applied(await build_record(s, incident_id), SUPERSEDED) if record else SUPERSEDED
            result = transition(inc, event, self.policy)
            if isinstance(result, Ignored):
                if result.invalid and strict:
                    raise InvalidTransitionError(f"incident {incident_id} is {inc.state.value}: {result.reason}")
                return Applied(await build_record(s, incident_id), result) if record else result
            steps = self.with_start([(inc.state, result, event)])
            await repo.save(s, steps[-1][1].incident, version)
            return await self._effects(s, steps, record=record)

        return await self._commit(incident_id, change)

    async def create(
        self, steps: Sequence[Step], *, rows: Callable[[AsyncSession], None], unless_open: str | None = None
    ) -> Applied | str:
        """Insert the incident ``steps`` end with, ``rows`` (its alerts, verdicts) with it.

        ``unless_open``: a group key; if that group has an open incident, its id
        instead, and nothing is written. The lookup shares the inserting
        transaction: one commit before a rollback starts. A writer that opened the
        group's incident in between breaks ``OPEN_GROUP_INDEX``; the
        ``ConstraintError`` reaches the caller, which knows whether to join it.
        """
        steps = self.with_start(list(steps))
        final = steps[-1][1].incident

        async def change(s: AsyncSession) -> Applied | str:
            if unless_open is not None and (existing := await repo.find_open(s, unless_open)) is not None:
                return existing
            await repo.insert(s, final)
            rows(s)
            return await self._effects(s, steps, new_incident=True)

        return await self._commit(final.id, change)

    async def open_or_join(self, new: NewIncident) -> Applied | str:
        """``create(new.steps, rows=new.rows, unless_open=new.group_key)``, sharing a transaction with others.

        Concurrent openings are written together (``store.group_commit``): one
        lookup of their groups, one INSERT per table, one build of their records,
        one commit. A group whose transaction broke ``OPEN_GROUP_INDEX`` (another
        writer opened one of its groups first) is retried one incident at a time,
        so each conflict reaches its own caller as before.
        """
        answer = await self._openings.submit(new)
        if isinstance(answer, _Alone):
            return await self.create(new.steps, rows=new.rows, unless_open=new.group_key)
        return answer

    async def _open_group(self, news: Sequence[NewIncident]) -> Sequence[Applied | str | _Alone]:
        """One transaction for ``news``: each opens its group's incident, or answers the one open already."""
        prepared = [self.with_start(list(n.steps)) for n in news]

        async def change(s: AsyncSession) -> list[Applied | str]:
            open_ids = await repo.find_open_many(s, [n.group_key for n in news])
            answers: list[Applied | str] = []
            opened: list[int] = []
            # In group-key order: two replicas inserting overlapping groups wait for each other, never in a cycle.
            for i in sorted(range(len(news)), key=lambda i: news[i].group_key):
                if news[i].group_key not in open_ids:
                    final = prepared[i][-1][1].incident
                    open_ids[news[i].group_key] = final.id  # a later opening of the same group joins this one
                    repo.add_incident(s, final)
                    opened.append(i)
            await s.flush()  # the incidents before the rows that refer to them
            notes = {}
            for i in opened:
                news[i].rows(s)
                notes[i] = await self._write_effects(s, prepared[i], new_incident=True)
            await s.flush()
            ids = [prepared[i][-1][1].incident.id for i in opened]
            records = dict(zip(opened, await build_records(s, ids, with_timeline=True), strict=True))
            for i, n in enumerate(news):
                if i in records:
                    await self._enqueue(s, notes[i], records[i])
                    answers.append(Applied(records[i], combined(prepared[i])))
                else:
                    answers.append(open_ids[n.group_key])
            return answers

        try:
            async with self._store.write_lock, self._store.transaction() as s:
                answers = await change(s)
        except ConstraintError as exc:
            if exc.constraint != OPEN_GROUP_INDEX or len(news) == 1:
                raise
            return [_ALONE] * len(news)
        for answer in answers:
            if isinstance(answer, Applied):
                self._on_commit(answer.result)  # after the commit, as in ``_commit``
        return answers

    def with_start(self, steps: list[Step]) -> list[Step]:
        """Fold ``approved → rolling_back`` into the transaction that approved, on the leader.

        The leader drives the rollback as soon as this commits, so a separate
        transaction for ``RollbackStarted`` only added latency before the PATCH.
        Crash safety is unchanged: ``rolling_back`` is re-driven at start-up like
        ``approved``, and the executor is idempotent per incident and target.
        A standby leaves the incident approved for the leader to pick up.
        """
        last = steps[-1][1]
        if not starts_rollback(last) or last.incident.state is not State.APPROVED or not self._is_leader():
            return steps
        if self._may_hold(last.incident):
            return steps
        started = ev.RollbackStarted(at=self._clock.now())
        nxt = transition(last.incident, started, self.policy)
        if not isinstance(nxt, Transition):  # pragma: no cover - approved always accepts RollbackStarted
            return steps
        return [*steps, (State.APPROVED, nxt, started)]

    async def _commit(self, incident_id: str, change: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
        for attempt in range(ATTEMPTS):
            try:
                async with self._store.write_lock, self._store.transaction() as s:
                    out = await change(s)
            except (ConcurrentUpdateError, ConstraintError) as exc:
                if isinstance(exc, ConstraintError) and exc.constraint not in _RACY_CONSTRAINTS:
                    raise
                if attempt + 1 == ATTEMPTS:
                    raise ConcurrentUpdateError(incident_id) from None
                await asyncio.sleep(random.uniform(0, _RACE_PAUSE_S * 2**attempt))  # noqa: S311 - jitter
                continue
            if isinstance(out, Applied | Transition):
                # After the commit, so the driver and a woken outbox worker find the new rows.
                self._on_commit(out.result if isinstance(out, Applied) else out)
            return out
        raise ConcurrentUpdateError(incident_id)  # pragma: no cover - the loop returns or raises

    @overload
    async def _effects(
        self, s: AsyncSession, steps: Sequence[Step], *, new_incident: bool = ..., record: Literal[True] = ...
    ) -> Applied: ...

    @overload
    async def _effects(
        self, s: AsyncSession, steps: Sequence[Step], *, new_incident: bool = ..., record: bool
    ) -> Applied | Transition: ...

    async def _effects(
        self, s: AsyncSession, steps: Sequence[Step], *, new_incident: bool = False, record: bool = True
    ) -> Applied | Transition:
        """Write every step's effects, then the decision record once, which the notifications carry.

        Audit entries and timers go first, so the record carried by each outbox
        notification is exactly what this transaction commits. Without ``record``
        and without a notification, no record is built and the transition is the answer.
        """
        notes = await self._write_effects(s, steps, new_incident=new_incident)
        await s.flush()
        if not record and not notes:
            return combined(steps)
        built = await build_record(s, steps[-1][1].incident.id)
        await self._enqueue(s, notes, built)
        return Applied(built, combined(steps))

    async def _write_effects(
        self, s: AsyncSession, steps: Sequence[Step], *, new_incident: bool
    ) -> list[tuple[Incident, ev.Notify]]:
        """The steps' audit entries and timers (added to ``s``, not flushed); the notifications they ask for."""
        notes: list[tuple[Incident, ev.Notify]] = []
        armed: set[ev.TimerKind] = set()  # a new incident's timers need no lookup, until one is set twice
        for before, t, event in steps:
            for effect in t.effects:
                if isinstance(effect, ev.Audit):
                    repo.add_audit(
                        s, t.incident.id, at=event.at, actor=effect.actor, action=effect.action,
                        detail=_audit_detail(effect, event),
                    )  # fmt: skip
                elif isinstance(effect, ev.SetTimer):
                    fresh = new_incident and effect.kind not in armed
                    await repo.set_timer(s, t.incident.id, effect.kind, effect.due, new_incident=fresh)
                    armed.add(effect.kind)
                elif isinstance(effect, ev.CancelTimer):
                    await repo.cancel_timer(s, t.incident.id, effect.kind)
                elif isinstance(effect, ev.Notify):
                    notes.append((t.incident, effect))
            _count(before, t.incident, event)
        return notes

    async def _enqueue(
        self, s: AsyncSession, notes: Sequence[tuple[Incident, ev.Notify]], record: IncidentRecord
    ) -> None:
        """The outbox rows of ``notes``, each carrying ``record`` (what this transaction commits)."""
        now, payload = self._clock.now(), record.to_json()
        for inc, note in notes:
            d = inc.decision
            summary = f"SHADOW (nothing is changed): {note.summary}" if d.shadow else note.summary
            n = NotificationEvent(inc.id, note.kind, d.severity, summary, payload, d.channels)
            await enqueue_notification(s, n, now, channels=self._notify_channels)


def _audit_detail(effect: ev.Audit, event: ev.Event) -> dict[str, Any]:
    """The audit entry's detail, with what the record's actions and verification are read from."""
    via = getattr(event, "via", None)
    detail = dict(effect.detail) | ({"via": via} if via else {})
    if isinstance(event, ev.RollbackFinished) and event.results:
        detail["results"] = [dict(r) for r in event.results]
    if isinstance(event, ev.VerificationPassed | ev.VerificationFailed):
        detail["verification"] = event.detail
    return detail


def _count(before: State, inc: Incident, event: ev.Event) -> None:
    if before is not inc.state:
        TRANSITIONS.labels(from_state=before.value, to_state=inc.state.value).inc()
        if inc.state is State.APPROVED:
            APPROVAL_WAIT.observe((event.at - inc.opened_at).total_seconds())
