"""Deployments (of any workload kind) as the delivery pipeline reports them: the values the deploy history holds.

Bottom layer, beside ``daemon.model``. ``sources.deploy_events`` parses Kafka
messages into ``DeployEvent``; ``ingest.history`` stores them and reads them
back as a ``DeployHistory`` snapshot, newest first, which ``rules`` correlate
alerts with and ``incidents`` name in a decision record.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.target import Target, WorkloadKind


class DeployKind(enum.StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """A deployment of a service, as the delivery pipeline reported it on Kafka.

    ``kind`` is what happened (the event's ``type``); ``workload_kind`` is the kind of the
    workload named ``deployment`` (the event's ``kind``: a Deployment unless it says otherwise).
    """

    event_id: str
    kind: DeployKind
    service: str
    namespace: str
    deployment: str
    at: datetime
    revision: int | None = None
    image: str = ""
    version: str = ""
    commit: str = ""
    author: str = ""
    migration: bool = False
    workload_kind: WorkloadKind = WorkloadKind.DEPLOYMENT

    @property
    def target(self) -> Target:
        return Target(self.namespace, self.deployment, self.workload_kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "kind": self.kind.value, "service": self.service,
            "namespace": self.namespace, "deployment": self.deployment, "at": self.at.isoformat(),
            "revision": self.revision, "image": self.image, "version": self.version,
            "commit": self.commit, "author": self.author, "migration": self.migration,
            "workload_kind": self.workload_kind.value,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeployEvent:
        return cls(
            event_id=d["event_id"], kind=DeployKind(d["kind"]), service=d["service"],
            namespace=d["namespace"], deployment=d["deployment"], at=datetime.fromisoformat(d["at"]),
            revision=d.get("revision"), image=d.get("image", ""), version=d.get("version", ""),
            commit=d.get("commit", ""), author=d.get("author", ""), migration=bool(d.get("migration")),
            workload_kind=WorkloadKind(d.get("workload_kind") or WorkloadKind.DEPLOYMENT),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeployHistory:
    """Recent deployments the rules may correlate an alert with, newest first."""

    events: tuple[DeployEvent, ...] = ()

    def latest_for(
        self, *, service: str | None = None, target: Target | None = None, before: datetime | None = None
    ) -> DeployEvent | None:
        for ev in self.events:
            if service is not None and ev.service != service:
                continue
            if target is not None and ev.target != target:
                continue
            if before is not None and ev.at > before:
                continue
            return ev
        return None
