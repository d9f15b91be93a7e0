"""Why a rollout is stuck, in the words ``kubectl get pods`` shows: the warnings of the workload's pods.

Pure over the pods' JSON (``pod_warnings``), plus the one read that fetches
them (``warnings_for``). A rollout that times out or fails reports these with
its message, so the responder reads "pod web-2: CrashLoopBackOff (back-off
restarting failed container)" instead of "1 pods not ready". Reading pods is
best-effort: without the permission (or with the API server away) the message
simply carries no warnings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from daemon.actions.client import KubeApi, KubeApiError, KubeUnavailableError
from daemon.actions.undo import label_selector
from daemon.logs import get_logger
from daemon.target import Target

log = get_logger(__name__)

# The container waiting reasons kubectl shows for a pod that cannot start.
WAITING_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"}
)
MAX_WARNINGS = 5  # a message a responder reads, not a listing


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pod_warnings(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per pod in trouble: its waiting reason (and message), or Unschedulable."""
    out: list[str] = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        reasons = []
        for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in WAITING_REASONS:
                detail = f" ({_short(str(waiting['message']))})" if waiting.get("message") else ""
                reasons.append(f"{waiting['reason']}{detail}")
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason"):
                detail = f" ({_short(str(cond['message']))})" if cond.get("message") else ""
                reasons.append(f"{cond['reason']}{detail}")
        if reasons:
            out.append(f"pod {meta.get('name', '?')}: {'; '.join(reasons)}")
    if len(out) > MAX_WARNINGS:
        out = [*out[:MAX_WARNINGS], f"and {len(out) - MAX_WARNINGS} more pods"]
    return out


async def warnings_for(kube: KubeApi, target: Target, workload: Mapping[str, Any]) -> list[str]:
    """The warnings of the pods ``workload`` selects; none when they cannot be read."""
    try:
        pods = await kube.list_pods(target.namespace, label_selector(workload))
    except (KubeApiError, KubeUnavailableError) as exc:
        log.info("rollback.pods_unreadable", target=str(target), reason=exc.reason)
        return []
    return pod_warnings(pods)
