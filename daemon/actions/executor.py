"""The actions stage's entry point: carry out a ``RollbackRequest`` safely, once, for a group of workloads.

Seed 8.2's emergency procedure, made safe: for every target, check (GitOps,
kubectl's own refusals, the budget and the loop breaker), persist the intent,
then pause all → undo all → resume all → wait for all → verify. A single
target is undone as kubectl does it, without a pause; only a group pauses its
Deployments (StatefulSets and DaemonSets cannot be paused), so they land together. A failure in
one target is that target's outcome; the others proceed. An intent persisted
before the patch makes the request idempotent: a re-executed request whose
undo already happened answers ALREADY_DONE and only waits, and ``reconcile``
settles intents a crash left open. With ``dry_run`` the API server validates
the undo patch (server-side dry run) and nothing changes.

Fencing: the ``Fence`` given at construction is checked when the intent is
persisted (its token is stored with the intent) and again before each patch.
A replica that lost the Lease reports its targets ``interrupted`` and leaves
the intents open; the new leader's ``reconcile`` takes them over.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TypeVar

import structlog
from kubernetes_asyncio.client.api_client import ApiClient

from daemon.actions import group, kinds
from daemon.actions.attempts import check_one_attempt
from daemon.actions.client import KubeApi
from daemon.actions.fence import Fence, NotLeaderError, Unfenced
from daemon.actions.group import ReconcileResult, Work
from daemon.actions.intents import Intent, IntentStore
from daemon.actions.safety import APPLIED_STATES, check_budget, check_gitops, check_loop
from daemon.actions.undo import UndoError, apply_plan
from daemon.actions.verify import MetricQuery, verify
from daemon.clock import Clock
from daemon.config import KubernetesSettings
from daemon.errors import RollbackdError
from daemon.logs import get_logger
from daemon.metrics import DECISION_LATENCY, ROLLBACKS
from daemon.model import RollbackOutcome, RollbackRequest, Target, TargetOutcome, TargetResult
from daemon.store.db import Store

log = get_logger(__name__)

# Retries of temporary cluster failures: short first, so a brief outage costs seconds, then capped.
RETRY_FIRST_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 5.0

# Called after each step of each target ("planned", "paused", "patched", "resumed", "ready"),
# e.g. to note progress on the incident; an exception raised here aborts the execution.
ProgressListener = group.ProgressListener
__all__ = ["ProgressListener", "ReconcileResult", "RollbackExecutor"]


class RollbackExecutor:
    """Executes rollback requests against the cluster (or validates them in dry-run)."""

    def __init__(  # noqa: PLR0917 - the lead's wiring passes these positionally
        self,
        api: ApiClient | None,
        store: Store,
        clock: Clock,
        settings: KubernetesSettings,
        metric_query: MetricQuery | None = None,
        dry_run: bool = False,
        *,
        progress: ProgressListener | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.kube = KubeApi(api, settings.request_timeout_s) if api is not None else None
        self.intents = IntentStore(store)
        self.clock = clock
        self.settings = settings
        self.metric_query = metric_query
        self.dry_run = dry_run
        self.progress = progress
        # No fence given: a single replica, which is always the only writer.
        self.fence: Fence = fence if fence is not None else Unfenced("local")

    async def execute(self, req: RollbackRequest) -> RollbackOutcome:
        """Roll back every target of ``req``; one outcome per target, then verification."""
        with structlog.contextvars.bound_contextvars(incident_id=req.incident_id):
            dry = self.dry_run if req.dry_run is None else req.dry_run
            if self.kube is None:
                log.warning("rollback.no_cluster", targets=[str(t) for t in req.targets])
                detail = "no Kubernetes cluster reachable: dry run, nothing validated or changed"
                return self._finish([TargetOutcome(t, TargetResult.DRY_RUN, detail=detail) for t in req.targets])
            works = await self._attempt(req, req.targets, dry)
            works = await self._retry_temporary(req, works, dry)
            outcomes = [w.outcome() for w in works]
            fenced = [w for w in works if w.result is TargetResult.INTERRUPTED]
            if fenced:
                # Not an outcome to record on the incident: it is still rolling back, under a new leader.
                self._finish(outcomes)
                raise NotLeaderError(f"{fenced[0].target}: {fenced[0].detail}; left to the new leader")
            verified, verify_detail = await self._verify(req, works)
            return self._finish(outcomes, verified, verify_detail)

    async def _attempt(self, req: RollbackRequest, targets: tuple[Target, ...], dry: bool) -> list[Work]:
        assert self.kube is not None  # noqa: S101 - execute() returned early otherwise
        noted = partial(self._noted, req)
        run = group.GroupRun(
            self.kube, self.intents, self.clock, self.settings, noted, fence=self.fence,
            forced_after_s=None if dry else req.forced_rollback_after_s,
        )  # fmt: skip
        works = [await self._prepare(req, t, dry) for t in targets]
        await run.execute(works)
        return works

    async def _noted(self, req: RollbackRequest, key: str, target: Target, step: str) -> None:
        """Each step of a target: the decision-to-patch latency at the patch, then the caller's listener."""
        if step == "patched" and req.opened_at is not None:
            DECISION_LATENCY.observe(max(0.0, (self.clock.now() - req.opened_at).total_seconds()))
        if self.progress is not None:
            await self.progress(key, target, step)

    async def _retry_temporary(self, req: RollbackRequest, works: list[Work], dry: bool) -> list[Work]:
        """Try again the targets that failed for a passing reason, until the rollout deadline.

        An apiserver that is down for a while must delay a rollback, not cancel it. Retrying is
        safe: the persisted intent makes an undo that already reached the cluster ALREADY_DONE.
        """
        deadline = self.clock.now().timestamp() + self.settings.rollout_timeout_s
        delay = RETRY_FIRST_DELAY_S
        while True:
            temporary = [w for w in works if w.result is TargetResult.FAILED and w.retriable]
            if not temporary or self.clock.now().timestamp() + delay > deadline:
                return works
            log.warning(
                "rollback.retrying", targets=[str(w.target) for w in temporary], in_s=delay,
                why=[w.detail for w in temporary],
            )  # fmt: skip
            await self.clock.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)
            again = {w.target: w for w in await self._attempt(req, tuple(w.target for w in temporary), dry)}
            works = [again.get(w.target, w) for w in works]

    def _finish(
        self, outcomes: list[TargetOutcome], verified: bool | None = None, verify_detail: str = ""
    ) -> RollbackOutcome:
        for o in outcomes:
            ROLLBACKS.labels(outcome=o.result.value).inc()
            log.info("rollback.outcome", target=str(o.target), result=o.result.value, detail=o.detail)
        return RollbackOutcome(tuple(outcomes), verified, verify_detail)

    async def _prepare(self, req: RollbackRequest, target: Target, dry: bool) -> Work:
        """Every check before anything changes; the intent is persisted here for a real run."""
        assert self.kube is not None  # noqa: S101 - execute() returned early otherwise
        work = Work(target=target, key=req.idempotency_key(target), dry_run=dry)
        try:
            await self._prepare_checked(req, work)
        except UndoError as exc:
            work.settle(TargetResult.REFUSED, str(exc))
        except RollbackdError as exc:
            work.fail(exc, str(exc))
        return work

    async def _prepare_checked(self, req: RollbackRequest, work: Work) -> None:
        assert self.kube is not None  # noqa: S101 - execute() returned early otherwise
        # Every read the checks need, at once: they are independent, and one after another their round
        # trips (the API server's two, the store's three) added up on the way to the patch (issue 19,
        # bench.latency). The workload's own error wins: a missing Deployment is the outcome, whatever
        # else failed meanwhile.
        answers = await asyncio.gather(
            kinds.load(self.kube, work.target),
            # The term this execution acts for: stored with the intent, checked before every write.
            self.fence.check() if not work.dry_run else _nothing(),
            self.intents.get(work.key),
            self.intents.for_target(work.target) if req.automatic else _nothing(),
            return_exceptions=True,
        )
        workload, token, existing, history = (_ok(answers[0]), _ok(answers[1]), _ok(answers[2]), _ok(answers[3]))
        if token is not None:
            work.token = token
        if existing is not None and existing.dry_run:
            existing = None
        paused = workload.paused
        if existing is not None:
            done = existing.state in APPLIED_STATES or (
                bool(existing.detail.get("to_template_hash"))
                and workload.live_hash == existing.detail["to_template_hash"]
            )
            # A pause of ours that a crash left behind must be undone, not refused as kubectl would.
            work.paused_by_us = paused and bool(existing.detail.get("pause"))
            if done:
                work.already_done(existing)
                if work.dry_run:
                    work.settle(TargetResult.ALREADY_DONE, "a previous attempt of this intent had rolled back")
                    return
                state = existing.state if existing.state in APPLIED_STATES else "applied"
                fence = work.token.as_detail() if work.token else None
                await self.intents.advance(work.key, state, self.clock.now(), patched=True, fence=fence)
                return
        refusal = check_gitops(workload.obj)
        if refusal is not None:
            work.settle(TargetResult.REFUSED, refusal.detail)
            return
        plan = workload.plan(req.to_revision or 0, ignore_paused=work.paused_by_us)
        work.plan = plan
        if plan.warning:  # kubectl prints it and carries on; so do we
            log.warning("rollback.kubectl_apply_warning", target=str(work.target), warning=plan.warning)
        if plan.skipped:
            work.settle(TargetResult.ALREADY_DONE, plan.skipped)
            return
        if req.automatic:
            past = [i.past() for i in history or ()]
            # One attempt per bad revision first, so the decision record names it when it holds (control).
            refusal = (
                check_one_attempt(
                    plan, past, now=self.clock.now(), window_s=self.settings.bad_revision_window_s, exclude_id=work.key
                )
                or check_budget(
                    past,
                    now=self.clock.now(),
                    window_s=self.settings.budget_window_s,
                    max_rollbacks=self.settings.budget_max_rollbacks,
                    exclude_id=work.key,
                )
                or check_loop(plan, past, exclude_id=work.key)
            )
            if refusal is not None:
                work.settle(TargetResult.REFUSED, refusal.detail)
                return
        if work.dry_run:
            await apply_plan(self.kube, plan, dry_run=True)
            work.settle(
                TargetResult.DRY_RUN,
                f"dry run: the API server accepted the undo from revision {plan.from_revision} "
                f"to revision {plan.to_revision}; nothing changed",
            )
            return
        # kubectl pauses nothing; only a group pauses its Deployments, so that they land together (seed 8.2).
        work.needs_pause = workload.pausable and not paused and len(req.targets) > 1
        await self.intents.plan(self._intent(req, work), self.clock.now())
        if self.progress is not None:
            await self.progress(work.key, work.target, "planned")

    def _intent(self, req: RollbackRequest, work: Work) -> Intent:
        assert work.plan is not None  # noqa: S101 - only called with a plan
        plan = work.plan
        return Intent(
            id=work.key,
            incident_id=req.incident_id,
            target=work.target,
            state="planned",
            automatic=req.automatic,
            dry_run=False,
            from_revision=plan.from_revision,
            to_revision=plan.to_revision,
            created_at=self.clock.now(),
            detail={
                "reason": req.reason,
                "to_replicaset": plan.to_replicaset,
                "to_template_hash": plan.to_template_hash,
                "from_template_hash": plan.from_template_hash,
                "pause": work.needs_pause,
                "patched": False,
                "fence": work.token.as_detail() if work.token else None,
            },
        )

    async def _verify(self, req: RollbackRequest, works: list[Work]) -> tuple[bool | None, str]:
        if req.verify is None:
            return None, ""
        rolled = [w for w in works if w.result in (TargetResult.ROLLED_BACK, TargetResult.ALREADY_DONE)]
        if not rolled or any(w.result in (TargetResult.FAILED, TargetResult.TIMED_OUT) for w in works):
            return None, "not verified: the rollback did not complete"
        result = await verify(req.verify, self.clock, self.metric_query)
        state = "verified" if result.ok else "failed"
        for w in rolled:
            if not w.dry_run:
                await self.intents.advance(w.key, state, self.clock.now(), verify=result.detail)
        return result.ok, result.detail

    async def reconcile(self) -> list[ReconcileResult]:
        """After a restart: settle every planned/applied intent from the Deployment as it is now.

        A planned intent whose undo reached the cluster becomes ``applied`` (never a second
        undo), one whose undo did not becomes ``interrupted``; a Deployment we paused is
        resumed. Re-executing the request then waits for the rollout (ALREADY_DONE).
        """
        if self.kube is None:
            return []
        results = []
        for intent in await self.intents.open_intents():
            try:
                results.append(await group.reconcile_one(self.kube, self.intents, self.clock, intent, self.fence))
            except NotLeaderError as exc:
                # Lost the Lease while reconciling: the next leader reconciles what is left.
                log.warning("rollback.reconcile_fenced", intent=intent.id, error=str(exc))
                break
            except RollbackdError as exc:
                log.warning("rollback.reconcile_failed", intent=intent.id, reason=exc.reason, error=str(exc))
                results.append(
                    ReconcileResult(intent.id, intent.incident_id, intent.target, intent.state, intent.state, str(exc))
                )
        return results


async def _nothing() -> None:
    return None


_T = TypeVar("_T")


def _ok(answer: _T | BaseException) -> _T:
    """One of the gathered reads' answer, or its error raised (the first one asked for wins)."""
    if isinstance(answer, BaseException):
        raise answer
    return answer
