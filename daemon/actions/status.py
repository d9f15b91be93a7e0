"""``kubectl rollout status`` for every kind: is the rollout done, still going, or failed?

``rollout_state`` is kubectl's ``DeploymentStatusViewer.Status`` on the API's
JSON (observedGeneration, updated/total/available replicas, the
``ProgressDeadlineExceeded`` reason), ``DaemonSetStatusViewer.Status`` (updated
and available numbers equal the desired number) or ``StatefulSetStatusViewer.Status``
(ready replicas, then the partition's updated replicas), all from k8s.io/kubectl
pkg/polymorphichelpers/rollout_status.go. Where kubectl refuses (an ``OnDelete``
update strategy), the template is back but no pod will be replaced until someone
deletes it: that is reported as done, and said plainly. ``wait_for_rollout``
polls with the injected Clock until done, failed, or the timeout (seed 8.2: 300 s);
a timeout or a failure carries the pods' warnings (``actions.pods``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from daemon.actions.client import KubeApi, KubeUnavailableError
from daemon.actions.pods import warnings_for
from daemon.clock import Clock
from daemon.errors import PermanentError, TemporaryError
from daemon.model import Target
from daemon.target import WorkloadKind

POLL_S = 1.0


class RolloutFailedError(PermanentError):
    """The Deployment exceeded its progress deadline (``kubectl rollout status`` exits non-zero)."""


class RolloutTimeoutError(TemporaryError):
    """The rollout did not finish within the timeout; it may still finish later."""


@dataclass(frozen=True, slots=True)
class RolloutState:
    done: bool
    message: str
    revision: int | None = None


def rollout_state(obj: Mapping[str, Any], kind: WorkloadKind = WorkloadKind.DEPLOYMENT) -> RolloutState:
    """One look at the workload, as kubectl judges its kind."""
    if kind is WorkloadKind.STATEFULSET:
        return statefulset_state(obj)
    if kind is WorkloadKind.DAEMONSET:
        return daemonset_state(obj)
    return deployment_state(obj)


def _on_delete(obj: Mapping[str, Any], what: str) -> RolloutState | None:
    strategy = ((obj.get("spec") or {}).get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if strategy == "RollingUpdate":
        return None
    name = (obj.get("metadata") or {}).get("name", "")
    return RolloutState(
        True,
        f'{what} "{name}": template restored, pods not replaced (update strategy {strategy}: '
        "each pod takes the restored template only when it is deleted)",
    )


def _num(status: Mapping[str, Any], key: str) -> int:
    return int(status.get(key) or 0)


def daemonset_state(ds: Mapping[str, Any]) -> RolloutState:
    """kubectl's ``DaemonSetStatusViewer.Status``."""
    refused = _on_delete(ds, "daemon set")
    if refused is not None:
        return refused
    meta, status = ds.get("metadata") or {}, ds.get("status") or {}
    name = meta.get("name", "")
    if int(meta.get("generation") or 0) > _num(status, "observedGeneration"):
        return RolloutState(False, "Waiting for daemon set spec update to be observed...")
    desired, updated = _num(status, "desiredNumberScheduled"), _num(status, "updatedNumberScheduled")
    available = _num(status, "numberAvailable")
    if updated < desired:
        msg = f"{updated} out of {desired} new pods have been updated..."
    elif available < desired:
        msg = f"{available} of {desired} updated pods are available..."
    else:
        return RolloutState(True, f'daemon set "{name}" successfully rolled out')
    return RolloutState(False, f'Waiting for daemon set "{name}" rollout to finish: {msg}')


def statefulset_state(sts: Mapping[str, Any]) -> RolloutState:
    """kubectl's ``StatefulSetStatusViewer.Status``: ready replicas, then the partition's updated ones."""
    refused = _on_delete(sts, "statefulset")
    if refused is not None:
        return refused
    meta, spec, status = sts.get("metadata") or {}, sts.get("spec") or {}, sts.get("status") or {}
    observed = _num(status, "observedGeneration")
    if observed == 0 or int(meta.get("generation") or 0) > observed:
        return RolloutState(False, "Waiting for statefulset spec update to be observed...")
    replicas = spec.get("replicas")
    ready, updated = _num(status, "readyReplicas"), _num(status, "updatedReplicas")
    if replicas is not None and ready < int(replicas):
        return RolloutState(False, f"Waiting for {int(replicas) - ready} pods to be ready...")
    rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate")
    if rolling is not None:
        return _partitioned(replicas, rolling.get("partition"), updated)
    update_rev, current_rev = status.get("updateRevision", ""), status.get("currentRevision", "")
    if update_rev != current_rev:
        return RolloutState(
            False, f"waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
        )
    current = _num(status, "currentReplicas")
    return RolloutState(True, f"statefulset rolling update complete {current} pods at revision {current_rev}...")


def _partitioned(replicas: Any, partition: Any, updated: int) -> RolloutState:
    """kubectl's judgement of a RollingUpdate StatefulSet once its pods are ready: only ordinals ≥ partition."""
    if replicas is not None and partition is not None and updated < int(replicas) - int(partition):
        return RolloutState(
            False,
            f"Waiting for partitioned roll out to finish: {updated} out of "
            f"{int(replicas) - int(partition)} new pods have been updated...",
        )
    return RolloutState(True, f"partitioned roll out complete: {updated} new pods have been updated...")


def deployment_state(deployment: Mapping[str, Any]) -> RolloutState:
    """kubectl's ``DeploymentStatusViewer.Status``; raises RolloutFailedError past the deadline."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "")
    raw_rev = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision")
    revision = int(raw_rev) if raw_rev is not None and str(raw_rev).isdigit() else None
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return RolloutState(False, "Waiting for deployment spec update to be observed...", revision)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise RolloutFailedError(f'deployment "{name}" exceeded its progress deadline', reason="progress_deadline")
    replicas = spec.get("replicas")
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if replicas is not None and updated < int(replicas):
        msg = f"{updated} out of {replicas} new replicas have been updated..."
    elif total > updated:
        msg = f"{total - updated} old replicas are pending termination..."
    elif available < updated:
        msg = f"{available} of {updated} updated replicas are available..."
    else:
        return RolloutState(True, f'deployment "{name}" successfully rolled out', revision)
    return RolloutState(False, f'Waiting for deployment "{name}" rollout to finish: {msg}', revision)


SlowHook = Callable[[Mapping[str, Any]], Awaitable[bool]]  # True: done with it, else asked again next poll


async def wait_for_rollout(
    kube: KubeApi, target: Target, clock: Clock, timeout_s: float, *, poll_s: float = POLL_S,
    slow_after_s: float | None = None, on_slow: SlowHook | None = None,
) -> RolloutState:  # fmt: skip
    """Poll until the rollout is done; RolloutFailedError past its deadline, RolloutTimeoutError at ``timeout_s``.

    A transient API error (the API server restarting) is retried until the timeout,
    as ``kubectl rollout status`` keeps watching through a reconnect. ``on_slow`` is called
    with the workload as read when it is still not done ``slow_after_s`` in, at each poll
    until it answers True (the forced rollback of a stuck StatefulSet, ``actions.forced``).
    """
    start = clock.now().timestamp()
    deadline = start + timeout_s
    slow_at = start + slow_after_s if on_slow is not None and slow_after_s is not None else None
    last = "no answer yet"
    obj: dict[str, Any] | None = None
    while True:
        try:
            obj = await kube.get_workload(target)
            state = rollout_state(obj, target.kind)
        except KubeUnavailableError as exc:
            last = str(exc)
        except RolloutFailedError as exc:
            raise RolloutFailedError(await _with_warnings(kube, target, obj, str(exc)), reason=exc.reason) from None
        else:
            if state.done:
                return state
            last = state.message
            if slow_at is not None and on_slow is not None and clock.now().timestamp() >= slow_at:
                slow_at = None if await on_slow(obj) else slow_at
        remaining = deadline - clock.now().timestamp()
        if remaining <= 0:
            message = f"{target}: rollout not finished after {timeout_s:g}s: {last}"
            raise RolloutTimeoutError(await _with_warnings(kube, target, obj, message), reason="rollout_timeout")
        await clock.sleep(min(poll_s, remaining))


async def _with_warnings(kube: KubeApi, target: Target, obj: Mapping[str, Any] | None, message: str) -> str:
    """``message`` and, when the workload was read, what its pods say is wrong (kubectl's pod warnings)."""
    warnings = await warnings_for(kube, target, obj) if obj is not None else []
    return "; ".join([message, *warnings])
