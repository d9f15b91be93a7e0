"""The cluster-changing half of a rollback: pause all → undo all → resume all → wait for all.

``executor`` prepares one ``Work`` per target (checks done, intent
persisted); ``GroupRun`` carries the prepared ones through the seed 8.2
sequence, each step concurrently across targets, each failure confined to
its target (a Deployment we paused is always resumed; only a group of
several targets pauses, and only Deployments). Every patch is
preceded by a ``Fence`` check against the intent's fencing token: a replica
that lost the Lease makes no write, reports the target ``interrupted`` and
leaves the intent open for the new leader. ``reconcile_one`` settles an
intent a crash (or a lost Lease) left open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from daemon.actions import kinds
from daemon.actions.client import KubeApi, KubeApiError, KubeUnavailableError
from daemon.actions.fence import Fence, FencingToken, NotLeaderError
from daemon.actions.forced import ForcedDeletion, find_stuck, not_allowed_hint
from daemon.actions.intents import Intent, IntentStore
from daemon.actions.status import RolloutFailedError, RolloutTimeoutError, wait_for_rollout
from daemon.actions.undo import UndoPlan, apply_plan
from daemon.clock import Clock
from daemon.config import KubernetesSettings
from daemon.errors import RollbackdError
from daemon.logs import get_logger
from daemon.metrics import ROLLBACK_SECONDS
from daemon.model import Target, TargetOutcome, TargetResult
from daemon.target import WorkloadKind

log = get_logger(__name__)

ProgressListener = Callable[[str, Target, str], Awaitable[None]]


@dataclass(slots=True)
class Work:
    """One target's progress through one execution (mutable, never leaves the stage)."""

    target: Target
    key: str
    dry_run: bool
    plan: UndoPlan | None = None
    result: TargetResult | None = None  # set once the target needs no further cluster step
    detail: str = ""
    from_revision: int | None = None
    to_revision: int | None = None
    needs_pause: bool = False
    paused_by_us: bool = False  # we must resume it, whatever happens
    done_before: bool = False  # a previous attempt of the same intent applied the undo
    patched_at: float | None = None
    notes: list[str] = field(default_factory=list)
    retriable: bool = False  # failed for a reason that may pass (apiserver down, 5xx, 429, timeout)
    token: FencingToken | None = None  # the leadership term stored with the intent; every write checks it
    bad_revision: str = ""  # the template hash the undo left (from the intent when ``done_before``)
    restored_revision: str = ""  # the template hash it restored
    forced: Mapping[str, Any] | None = None  # the intent's forced deletion, from an earlier run of it
    forced_note: str = ""  # what the forced rollback did, or why the stuck pod was left (TargetOutcome.forced)

    def settle(self, result: TargetResult, detail: str) -> None:
        self.result, self.detail = result, detail

    def fail(self, exc: RollbackdError, detail: str) -> None:
        # Fenced out: not a failure of the rollback, which the new leader carries on.
        self.settle(TargetResult.INTERRUPTED if isinstance(exc, NotLeaderError) else TargetResult.FAILED, detail)
        self.retriable = exc.retriable

    def already_done(self, intent: Intent) -> None:
        self.done_before = True
        self.from_revision, self.to_revision = intent.from_revision, intent.to_revision
        self.bad_revision = str(intent.detail.get("from_template_hash") or "")
        self.restored_revision = str(intent.detail.get("to_template_hash") or "")
        self.forced = intent.detail.get("forced")

    def revisions(self) -> tuple[str, str]:
        """The bad and the restored template hash."""
        if self.plan is not None:
            return self.plan.from_template_hash, self.plan.to_template_hash
        return self.bad_revision, self.restored_revision

    @property
    def active(self) -> bool:
        """Still to be carried through the cluster steps."""
        return self.result is None and (self.plan is not None or self.done_before)

    def outcome(self) -> TargetOutcome:
        plan = self.plan
        return TargetOutcome(
            target=self.target,
            result=self.result or TargetResult.FAILED,
            from_revision=plan.from_revision if plan else self.from_revision,
            to_revision=plan.to_revision if plan else self.to_revision,
            detail="; ".join([self.detail, *self.notes]) if self.notes else self.detail,
            forced=self.forced_note,
        )


class GroupRun:
    """Runs the prepared works of one request through the cluster steps."""

    def __init__(
        self,
        kube: KubeApi,
        intents: IntentStore,
        clock: Clock,
        settings: KubernetesSettings,
        progress: ProgressListener | None,
        *,
        fence: Fence,
        forced_after_s: float | None = None,
    ) -> None:
        self.kube = kube
        self.intents = intents
        self.clock = clock
        self.settings = settings
        self.progress = progress
        self.fence = fence
        self.forced_after_s = forced_after_s  # the request's permission to force a stuck StatefulSet

    async def _step(self, work: Work, name: str) -> None:
        if self.progress is not None:
            await self.progress(work.key, work.target, name)

    async def _fail(self, work: Work, exc: RollbackdError, during: str) -> None:
        log.warning("rollback.step_failed", target=str(work.target), step=during, reason=exc.reason, error=str(exc))
        work.fail(exc, f"{during} failed: {exc}")
        # A fenced replica writes nothing, not even to the intent: it is the new leader's now.
        if not work.done_before and not isinstance(exc, NotLeaderError):
            await self.intents.advance(work.key, "failed", self.clock.now(), error=f"{during}: {exc}")

    async def execute(self, works: list[Work]) -> None:
        real = [w for w in works if w.active and not w.dry_run]
        await asyncio.gather(*(self._pause(w) for w in real if w.needs_pause))
        await asyncio.gather(*(self._undo(w) for w in real if w.active and not w.done_before))
        await asyncio.gather(*(self._resume(w) for w in real if w.paused_by_us))
        await asyncio.gather(*(self._wait(w) for w in real if w.active))

    async def _pause(self, work: Work) -> None:
        try:
            await self.fence.check(work.token)
            await self.kube.patch_deployment(
                work.target.namespace, work.target.name, {"spec": {"paused": True}}, patch_type="merge"
            )
        except RollbackdError as exc:
            await self._fail(work, exc, "pause")
            return
        work.paused_by_us = True
        await self._step(work, "paused")

    async def _undo(self, work: Work) -> None:
        assert work.plan is not None  # noqa: S101 - active works without done_before have a plan
        try:
            await self.fence.check(work.token)
            await apply_plan(self.kube, work.plan)
        except RollbackdError as exc:
            await self._fail(work, exc, "undo")
            return
        work.patched_at = self.clock.now().timestamp()
        await self._step(work, "patched")
        await self.intents.advance(work.key, "applied", self.clock.now(), patched=True)

    async def _resume(self, work: Work) -> None:
        try:
            await self.fence.check(work.token)
            await self.kube.patch_deployment(
                work.target.namespace, work.target.name, {"spec": {"paused": False}}, patch_type="merge"
            )
        except RollbackdError as exc:
            # The intent keeps pause=True, so reconcile resumes it later; the rollout waits till then.
            if work.result is None:
                await self._fail(work, exc, "resume")
            else:
                work.notes.append(f"resume failed, Deployment left paused: {exc}")
            return
        work.paused_by_us = False
        await self._step(work, "resumed")

    async def _wait(self, work: Work) -> None:
        after = self.forced_after_s if work.target.kind is WorkloadKind.STATEFULSET else None
        try:
            state = await wait_for_rollout(
                self.kube, work.target, self.clock, self.settings.rollout_timeout_s,
                slow_after_s=after, on_slow=partial(self._force, work),
            )  # fmt: skip
        except RolloutTimeoutError as exc:
            detail = await self._timed_out(work, str(exc))
            work.settle(TargetResult.TIMED_OUT, detail)
            await self.intents.advance(work.key, "failed", self.clock.now(), error=detail)
            return
        except (RolloutFailedError, RollbackdError) as exc:
            await self._fail(work, exc, "rollout")
            return
        if work.patched_at is not None:
            ROLLBACK_SECONDS.observe(max(0.0, self.clock.now().timestamp() - work.patched_at))
        if work.done_before:
            work.settle(TargetResult.ALREADY_DONE, f"a previous attempt had rolled back; {state.message}")
        else:
            work.settle(TargetResult.ROLLED_BACK, state.message)
        await self.intents.advance(work.key, "ready", self.clock.now(), result_revision=state.revision)
        await self._step(work, "ready")

    async def _force(self, work: Work, sts: Mapping[str, Any]) -> bool:
        """The forced rollback of a StatefulSet still not done ``forced_after_s`` after its undo."""
        assert self.forced_after_s is not None  # noqa: S101 - only asked when the request allows it
        bad, restored = work.revisions()
        deletion = ForcedDeletion(self.kube, self.intents, self.clock, self.fence, work.token)
        try:
            note = await deletion.run(
                work.key, work.target, sts, bad_revision=bad, restored_revision=restored,
                previous=work.forced, after_s=self.forced_after_s,
            )  # fmt: skip
        except KubeUnavailableError as exc:
            log.warning("rollback.forced_unreadable", target=str(work.target), reason=exc.reason, error=str(exc))
            return False  # the pods could not be read now: asked again at the next poll
        except KubeApiError as exc:  # refused (no RBAC for pods): said once, on the outcome
            note = f"forced rollback failed: could not read the StatefulSet's pods: {exc}"
        if note:
            work.notes.append(note)
            work.forced_note = note
            await self._step(work, "forced")
        return True

    async def _timed_out(self, work: Work, message: str) -> str:
        """The timeout's message, and the stuck pod a forced rollback would have deleted, if any."""
        if work.target.kind is not WorkloadKind.STATEFULSET or work.forced or work.forced_note:
            return message
        bad, restored = work.revisions()
        try:
            sts = await self.kube.get_workload(work.target)
            stuck = await find_stuck(self.kube, work.target, sts, bad_revision=bad, restored_revision=restored)
        except (KubeApiError, KubeUnavailableError):
            return message
        if stuck is None:
            return message
        work.forced_note = not_allowed_hint(stuck)
        return f"{message}; {work.forced_note}"


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What ``reconcile`` found and did for one open intent."""

    intent_id: str
    incident_id: str | None
    target: Target
    before: str
    after: str
    detail: str


async def reconcile_one(
    kube: KubeApi, intents: IntentStore, clock: Clock, intent: Intent, fence: Fence
) -> ReconcileResult:
    """Decide from the live Deployment whether the intent's undo happened; resume a pause of ours.

    The intent is taken over first: stamped with this leader's token, so a former leader's
    late write is refused by its own fence and this one's resume is checked against it.
    """
    token = await fence.check()
    await intents.advance(intent.id, intent.state, clock.now(), fence=token.as_detail())
    workload = await kinds.load(kube, intent.target)
    applied = intent.state == "applied" or (
        bool(intent.detail.get("to_template_hash")) and workload.live_hash == intent.detail["to_template_hash"]
    )
    after = "applied" if applied else "interrupted"
    detail = (
        "the undo had reached the cluster" if applied else "the undo had not reached the cluster; nothing was changed"
    )
    if after != intent.state:
        await intents.advance(intent.id, after, clock.now(), patched=applied, reconciled=True)
    if workload.paused and intent.detail.get("pause"):
        await fence.check(token)
        await kube.patch_deployment(
            intent.target.namespace, intent.target.name, {"spec": {"paused": False}}, patch_type="merge"
        )
        detail += "; resumed the Deployment we had paused"
    log.info("rollback.reconciled", intent=intent.id, before=intent.state, after=after, detail=detail)
    return ReconcileResult(intent.id, intent.incident_id, intent.target, intent.state, after, detail)
