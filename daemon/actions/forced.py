"""Forced rollback of a stuck StatefulSet: delete the one pod the OrderedReady controller waits for.

With ``podManagementPolicy: OrderedReady`` the StatefulSet controller replaces
nothing while a pod is not Running and Ready. A bad revision whose pod never
becomes Ready therefore stays after the template is reverted: the controller
waits for that pod forever (kubernetes#67250; the Kubernetes documentation
calls the way out "forced rollback": delete the pod, and the controller
recreates it from the restored template).

``stuck_pod`` finds that pod, purely from the StatefulSet and its pods: the
lowest ordinal that is not Running and Ready (the one the controller waits
for), and only while it is still on the bad revision (its
``controller-revision-hash``) and within the partition. ``ForcedDeletion``
deletes it, when the request allows it (the rule's ``forced_rollback``,
``RollbackRequest.forced_rollback_after_s``), once the rollout is still not
done that long after the undo: the deletion is written to the intent before
the call (``forced.state: deleting``) and settled after it, so a crash neither
loses it nor deletes a second pod; the call carries a precondition on the
pod's UID, so a pod the controller already recreated is never deleted again.
At most one pod per target per intent. ``group.GroupRun`` calls it while
waiting for the rollout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.actions.client import KubeApi, KubeApiError, KubeUnavailableError
from daemon.actions.fence import Fence, FencingToken
from daemon.actions.intents import IntentStore
from daemon.actions.undo import label_selector
from daemon.clock import Clock
from daemon.logs import get_logger
from daemon.metrics import FORCED_POD_DELETIONS
from daemon.target import Target, WorkloadKind

log = get_logger(__name__)

REVISION_LABEL = "controller-revision-hash"  # the ControllerRevision a StatefulSet's pod was made from
DELETE_TRIES = 3  # a passing apiserver failure is retried; the UID precondition makes a retry safe
RETRY_S = 1.0
DONE = ("deleted", "gone", "failed")  # a settled deletion: never a second one for the same intent


@dataclass(frozen=True, slots=True)
class StuckPod:
    """The pod the controller waits for, still on the bad revision."""

    name: str
    uid: str
    revision: str
    ordinal: int


def not_applicable(sts: Mapping[str, Any]) -> str | None:
    """Why a forced rollback does not apply to this StatefulSet (None: it does)."""
    spec = sts.get("spec") or {}
    policy = spec.get("podManagementPolicy") or "OrderedReady"
    strategy = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if policy != "OrderedReady":
        return f"podManagementPolicy {policy}"
    if strategy != "RollingUpdate":
        return f"update strategy {strategy}"
    return None


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready


def _ordinal(pod: Mapping[str, Any], sts_name: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(sts_name)}-(\d+)", str((pod.get("metadata") or {}).get("name", "")))
    return int(match.group(1)) if match else None


def stuck_pod(
    sts: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], *, bad_revision: str, restored_revision: str
) -> StuckPod | None:
    """The pod an OrderedReady controller waits for, if it is not Ready on the bad revision; else None.

    ``bad_revision`` is the ControllerRevision the undo left (the update revision before it),
    ``restored_revision`` the one it restored; a pod on any other revision, or below the
    partition (which the controller never updates), is not ours to delete.
    """
    if not_applicable(sts) is not None:
        return None
    meta, spec = sts.get("metadata") or {}, sts.get("spec") or {}
    uid, name = meta.get("uid"), str(meta.get("name", ""))
    partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0)
    live = []
    for pod in pods:
        pmeta = pod.get("metadata") or {}
        owned = any(r.get("controller") and r.get("uid") == uid for r in pmeta.get("ownerReferences") or [])
        ordinal = _ordinal(pod, name)
        if owned and ordinal is not None and not pmeta.get("deletionTimestamp"):
            live.append((ordinal, pod))
    waiting = next(((o, p) for o, p in sorted(live, key=lambda x: x[0]) if not _ready(p)), None)
    if waiting is None:
        return None
    ordinal, pod = waiting
    pmeta = pod.get("metadata") or {}
    revision = str((pmeta.get("labels") or {}).get(REVISION_LABEL, ""))
    if not revision or revision == restored_revision or ordinal < partition:
        return None
    if bad_revision and revision != bad_revision:
        return None
    return StuckPod(str(pmeta.get("name", "")), str(pmeta.get("uid", "")), revision, ordinal)


async def find_stuck(
    kube: KubeApi, target: Target, sts: Mapping[str, Any], *, bad_revision: str, restored_revision: str
) -> StuckPod | None:
    """``stuck_pod`` over the pods the StatefulSet selects, read now."""
    if target.kind is not WorkloadKind.STATEFULSET or not_applicable(sts) is not None:
        return None
    pods = await kube.list_pods(target.namespace, label_selector(sts))
    return stuck_pod(sts, pods, bad_revision=bad_revision, restored_revision=restored_revision)


def not_allowed_hint(pod: StuckPod) -> str:
    """The honest report of a stuck pod that rollbackd may not delete."""
    return (
        f"pod {pod.name} is not Ready on the bad revision {pod.revision}: the StatefulSet controller "
        "(OrderedReady) waits for it and will not replace it; forced rollback is not allowed "
        "(the rule's forced_rollback), so delete the pod to finish the rollback"
    )


class ForcedDeletion:
    """Deletes the stuck pod of one intent's StatefulSet, at most once, persisted before and after."""

    def __init__(
        self, kube: KubeApi, intents: IntentStore, clock: Clock, fence: Fence, token: FencingToken | None
    ) -> None:
        self.kube = kube
        self.intents = intents
        self.clock = clock
        self.fence = fence
        self.token = token

    async def run(
        self, key: str, target: Target, sts: Mapping[str, Any], *, bad_revision: str, restored_revision: str,
        previous: Mapping[str, Any] | None, after_s: float,
    ) -> str:  # fmt: skip
        """What was done, as a sentence for the outcome ("" when nothing was to do).

        ``previous`` is the intent's ``forced`` record from an earlier run of the same intent:
        a deletion it settled is not repeated, one it had started is finished (same UID).
        """
        if previous and previous.get("state") in DONE:
            return f"forced rollback: already {previous['state']} pod {previous.get('pod')} earlier"
        if previous and previous.get("state") == "deleting":
            pod = StuckPod(str(previous["pod"]), str(previous["uid"]), str(previous.get("revision", "")), -1)
        else:
            found = await find_stuck(
                self.kube, target, sts, bad_revision=bad_revision, restored_revision=restored_revision
            )
            if found is None:
                return ""
            pod = found
        record = {"pod": pod.name, "uid": pod.uid, "revision": pod.revision, "after_s": after_s}
        await self.fence.check(self.token)
        # Written before the call: a crash from here on finishes this deletion, never starts another.
        await self.intents.note(key, self.clock.now(), forced={**record, "state": "deleting"})
        state, error = await self._delete(target, pod)
        at = self.clock.now()
        await self.intents.note(key, at, forced={**record, "state": state, "at": at.isoformat(), "error": error})
        FORCED_POD_DELETIONS.labels(outcome=state).inc()
        log.warning("rollback.forced_pod_deletion", target=str(target), pod=pod.name, uid=pod.uid, state=state)
        if state == "failed":
            return f"forced rollback failed: could not delete pod {pod.name}: {error}"
        what = "deleted" if state == "deleted" else "found already replaced"
        restored = restored_revision or "the restored revision"
        return (
            f"forced rollback: {what} pod {pod.name} (uid {pod.uid}), not Ready on the bad revision {pod.revision} "
            f"{after_s:g}s after the undo, so that the controller recreates it on {restored}"
        )

    async def _delete(self, target: Target, pod: StuckPod) -> tuple[str, str]:
        """``deleted``, ``gone`` (no pod with that UID any more) or ``failed``, and the error."""
        last = ""
        for attempt in range(DELETE_TRIES):
            await self.fence.check(self.token)  # a replica that lost the Lease raises here, deletes nothing
            try:
                await self.kube.delete_pod(target.namespace, pod.name, pod.uid)
            except KubeApiError as exc:
                if exc.status in (404, 409):  # gone, or the precondition failed: recreated already
                    return "gone", ""
                return "failed", str(exc)
            except KubeUnavailableError as exc:
                last = str(exc)
                if attempt + 1 < DELETE_TRIES:
                    await self.clock.sleep(exc.delay or RETRY_S * (attempt + 1))
                continue
            return "deleted", ""
        return "failed", last
