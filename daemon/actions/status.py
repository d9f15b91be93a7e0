"""``kubectl rollout status`` for a Deployment: is the rollout done, still going, or failed?

``rollout_state`` is kubectl's ``DeploymentStatusViewer.Status`` on the API's
JSON (observedGeneration, updated/total/available replicas, the
``ProgressDeadlineExceeded`` reason). ``wait_for_rollout`` polls it with the
injected Clock until done, failed, or the timeout (seed 8.2: 300 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.actions.client import KubeApi, KubeUnavailableError
from daemon.clock import Clock
from daemon.errors import PermanentError, TemporaryError
from daemon.model import Target

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


def rollout_state(deployment: Mapping[str, Any]) -> RolloutState:
    """One look at the Deployment, as kubectl judges it; raises RolloutFailedError past the deadline."""
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


async def wait_for_rollout(
    kube: KubeApi, target: Target, clock: Clock, timeout_s: float, *, poll_s: float = POLL_S
) -> RolloutState:
    """Poll until the rollout is done; RolloutFailedError past its deadline, RolloutTimeoutError at ``timeout_s``.

    A transient API error (the API server restarting) is retried until the timeout,
    as ``kubectl rollout status`` keeps watching through a reconnect.
    """
    deadline = clock.now().timestamp() + timeout_s
    last = "no answer yet"
    while True:
        try:
            state = rollout_state(await kube.get_deployment(target.namespace, target.name))
        except KubeUnavailableError as exc:
            last = str(exc)
        else:
            if state.done:
                return state
            last = state.message
        remaining = deadline - clock.now().timestamp()
        if remaining <= 0:
            raise RolloutTimeoutError(
                f"{target}: rollout not finished after {timeout_s:g}s: {last}", reason="rollout_timeout"
            )
        await clock.sleep(min(poll_s, remaining))
