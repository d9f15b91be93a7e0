"""The decision where ``kubectl describe`` users look: Kubernetes Events and annotations on the target.

Part of actions (the only stage that talks to the cluster), serving the
outbox's ``kubernetes`` channel (``notify.outbox`` delivers, retries, gives
up). ``incidents.kube_events`` writes one row per Event in the transaction of
the change it reports: ``RollbackDecided`` and then ``RolledBack`` or
``RollbackRefused`` for each target, with messages like "revision 5 → 4 by
rule error-rate-above-5, incident abc123, approved by alice (Engineering
Lead)". An Event is an ``events.k8s.io/v1`` object in the target's namespace
whose ``regarding`` is the workload (its uid read first: ``kubectl describe
deployment`` selects Events by it); its name derives from the outbox row, so a redelivery finds it there
(409) instead of adding a second one. A ``RolledBack`` row also annotates the
workload with the incident (``rollbackd.io/incident``), a metadata-only merge
patch. Errors map as every cluster call's do: 429/5xx/timeouts retry, other
4xx fail the row.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from kubernetes_asyncio.client.api_client import ApiClient

from daemon.actions.client import KubeApi, KubeApiError
from daemon.clock import Clock
from daemon.errors import PermanentError
from daemon.target import Target

CHANNEL = "kubernetes"
CONTROLLER = "rollbackd.io/rollbackd"
INCIDENT_ANNOTATION = "rollbackd.io/incident"
ROLLED_BACK_ANNOTATION = "rollbackd.io/rolled-back"  # "revision 5 → 4 at <time>": the row's ``annotate``
_CONFLICT = 409


def _path(target: Target) -> str:
    return f"/apis/apps/v1/namespaces/{target.namespace}/{target.kind.resource}/{target.name}"


def _micro_time(at: datetime) -> str:
    """The API server's MicroTime: RFC 3339 with exactly six fractional digits."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeEventNotifier(KubeApi):
    """Delivers outbox rows of channel ``kubernetes``: creates the Event, annotates after a rollback."""

    channel = CHANNEL

    def __init__(self, api: ApiClient, request_timeout_s: float, clock: Clock, *, instance: str) -> None:
        super().__init__(api, request_timeout_s)
        self._clock = clock
        self._instance = instance

    async def deliver(self, payload: dict[str, Any]) -> None:
        try:
            target = Target.parse(str(payload["target"]))
            reason, note, kind = str(payload["reason"]), str(payload["message"]), str(payload["type"])
            incident = str(payload["incident_id"])
        except (KeyError, ValueError) as exc:
            raise PermanentError(f"kubernetes event payload is malformed: {exc!r}", reason="bad_payload") from None
        # ``kubectl describe`` finds Events by the object's uid too, so ``regarding`` carries it.
        obj = await self._call("GET", _path(target), f"get {target}")
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        key = hashlib.sha256(f"{incident}:{payload.get('outbox_id')}:{reason}".encode()).hexdigest()[:10]
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{target.name}.rollbackd.{key}", "namespace": target.namespace},
            "eventTime": _micro_time(self._clock.now()),
            "reportingController": CONTROLLER,
            "reportingInstance": self._instance[:128],
            "action": "Rollback",
            "reason": reason,
            "note": note[:1024],  # the API server's limit for a note
            "type": kind,
            "regarding": {
                "apiVersion": "apps/v1", "kind": target.kind.api_kind, "namespace": target.namespace,
                "name": target.name, "uid": uid,
            },
        }  # fmt: skip
        path = f"/apis/events.k8s.io/v1/namespaces/{target.namespace}/events"
        try:
            await self._call("POST", path, f"create event {reason} on {target}", body=body)
        except KubeApiError as exc:
            if exc.status != _CONFLICT:  # 409: this row's event exists already (a redelivery)
                raise
        if payload.get("annotate"):
            await self._annotate(target, incident, str(payload["annotate"]))

    async def _annotate(self, target: Target, incident: str, rolled_back: str) -> None:
        """Name the incident on the workload: metadata only, so the rollout is not touched."""
        annotations = {INCIDENT_ANNOTATION: incident, ROLLED_BACK_ANNOTATION: rolled_back}
        await self._call(
            "PATCH", _path(target), f"annotate {target}", body={"metadata": {"annotations": annotations}},
            content_type="application/merge-patch+json",
        )  # fmt: skip
