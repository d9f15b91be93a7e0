"""Which workload an alert names: the one rule, used by every stage.

Bottom layer, beside ``daemon.model``. The edge (``sources``) calls
``target_from_labels`` once, when it builds an ``Alert``, and stores the answer
in the alert (and so in its inbox row). The inbox partitions by it, the
pipeline reads the deploy history of it, the rules correlate and target with
it; nobody reads the workload labels a second time, so the stages cannot
disagree about an alert's workload.

The labels are kube-state-metrics': ``kube_deployment_*`` series carry
``namespace`` and ``deployment``, ``kube_statefulset_*`` carry ``statefulset``,
``kube_daemonset_*`` carry ``daemonset``. An alert may also say ``kind`` (one of
the kinds below, any case) and ``name`` explicitly. An alert without a
``namespace`` label names a workload in ``default``, as kubectl does without
``-n``. An alert whose labels name no workload has no target (``None``): rules
may still give it fixed targets, or take the target of a correlated deploy by
its ``service``.

A target is written ``NAMESPACE/NAME`` for a Deployment (as it always was) and
``KIND/NAMESPACE/NAME`` for any kind (``statefulset/prod/ledger``); ``KIND``
takes kubectl's spellings (``statefulset``, ``statefulsets``, ``sts``,
``statefulset.apps``, ``StatefulSet``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NAMESPACE = "default"
NAMESPACE_LABEL = "namespace"
KIND_LABEL = "kind"
NAME_LABEL = "name"
TARGET_SYNTAX = "NAMESPACE/NAME (a Deployment) or KIND/NAMESPACE/NAME (KIND: deployment, statefulset, daemonset)"
# Kubernetes' rules for a namespace (DNS-1123 label) and an object name (DNS-1123 subdomain).
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$")


class WorkloadKind(enum.StrEnum):
    """The kinds ``kubectl rollout undo`` can undo; the value is kube-state-metrics' label name."""

    DEPLOYMENT = "deployment"
    STATEFULSET = "statefulset"
    DAEMONSET = "daemonset"

    @property
    def api_kind(self) -> str:
        """The object's ``kind`` as the API server writes it."""
        return _API_KINDS[self]

    @property
    def resource(self) -> str:
        """The plural resource name in API paths and RBAC rules."""
        return f"{self.value}s"

    @classmethod
    def parse(cls, text: str) -> WorkloadKind:
        """kubectl's spellings of the kind; ValueError naming the accepted ones otherwise."""
        kind = _ALIASES.get(text.strip().lower().removesuffix(".apps"))
        if kind is None:
            raise ValueError(f"unknown workload kind {text!r}: expected deployment, statefulset or daemonset")
        return kind


_API_KINDS = {
    WorkloadKind.DEPLOYMENT: "Deployment",
    WorkloadKind.STATEFULSET: "StatefulSet",
    WorkloadKind.DAEMONSET: "DaemonSet",
}
_ALIASES = {
    **{k.value: k for k in WorkloadKind},
    **{k.resource: k for k in WorkloadKind},
    "deploy": WorkloadKind.DEPLOYMENT,
    "sts": WorkloadKind.STATEFULSET,
    "ds": WorkloadKind.DAEMONSET,
}

# The labels that name a workload, first match wins (kube-state-metrics' label per kind).
WORKLOAD_LABELS: tuple[WorkloadKind, ...] = tuple(WorkloadKind)


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """A workload rollbackd may act on: a Deployment unless ``kind`` says otherwise."""

    namespace: str
    name: str
    kind: WorkloadKind = WorkloadKind.DEPLOYMENT

    def __str__(self) -> str:
        if self.kind is WorkloadKind.DEPLOYMENT:
            return f"{self.namespace}/{self.name}"
        return f"{self.kind.value}/{self.namespace}/{self.name}"

    @property
    def display(self) -> str:
        """How a responder reads it: ``StatefulSet prod/ledger``."""
        return f"{self.kind.api_kind} {self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, default_namespace: str = DEFAULT_NAMESPACE) -> Target:
        """``NAME``, ``NAMESPACE/NAME`` (a Deployment) or ``KIND/NAMESPACE/NAME``; ValueError for an unknown kind."""
        parts = text.split("/")
        if len(parts) >= 3:
            return cls(parts[1], "/".join(parts[2:]), WorkloadKind.parse(parts[0]))
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        return cls(default_namespace, text)

    @classmethod
    def parse_strict(cls, text: str) -> Target:
        """What a person wrote (rule files, break-glass): the namespace is required, names are checked.

        ValueError says what was wrong and what is expected.
        """
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"found {text!r}, expected {TARGET_SYNTAX}")
        target = cls.parse(text)
        if not _NAMESPACE.match(target.namespace) or not _NAME.match(target.name):
            raise ValueError(f"found {text!r}, expected {TARGET_SYNTAX} with Kubernetes names (e.g. prod/api-gateway)")
        return target

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name}
        if self.kind is not WorkloadKind.DEPLOYMENT:  # a Deployment's JSON stays as it was written before kinds
            out["kind"] = self.kind.value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        kind = WorkloadKind.parse(str(data["kind"])) if data.get("kind") else WorkloadKind.DEPLOYMENT
        return cls(str(data["namespace"]), str(data["name"]), kind)


def target_from_labels(labels: Mapping[str, str]) -> Target | None:
    """The workload ``labels`` name, or ``None`` when they name none.

    An explicit ``kind`` naming a workload kind wins; the workload's name is then its kind's
    label or ``name``. A ``kind`` label that names no workload kind (alerts use ``kind`` for
    other things too) is ignored, and the kind labels decide.
    """
    namespace = labels.get(NAMESPACE_LABEL) or DEFAULT_NAMESPACE
    explicit = _explicit_kind(labels.get(KIND_LABEL) or "")
    if explicit is not None:
        name = labels.get(explicit.value) or labels.get(NAME_LABEL)
        return Target(namespace, name, explicit) if name else None
    for kind in WORKLOAD_LABELS:
        name = labels.get(kind.value)
        if name:
            return Target(namespace, name, kind)
    return None


def _explicit_kind(text: str) -> WorkloadKind | None:
    try:
        return WorkloadKind.parse(text) if text else None
    except ValueError:
        return None
