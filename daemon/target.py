"""Which workload an alert names: the one rule, used by every stage.

Bottom layer, beside ``daemon.model``. The edge (``sources``) calls
``target_from_labels`` once, when it builds an ``Alert``, and stores the answer
in the alert (and so in its inbox row). The inbox partitions by it, the
pipeline reads the deploy history of it, the rules correlate and target with
it; nobody reads the workload labels a second time, so the stages cannot
disagree about an alert's workload.

The labels are kube-state-metrics' (``kube_deployment_*`` series carry
``namespace`` and ``deployment``). An alert without a ``namespace`` label names
a workload in ``default``, as kubectl does without ``-n``. An alert whose
labels name no workload has no target (``None``): rules may still give it
fixed targets, or take the target of a correlated deploy by its ``service``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NAMESPACE = "default"
NAMESPACE_LABEL = "namespace"
# The labels that name a workload, first match wins. Only Deployments can be rolled back today;
# a new kind (kube-state-metrics' ``statefulset``, ``daemonset``) is one more entry here once
# ``Target`` carries a kind and the executor can undo it.
WORKLOAD_LABELS: tuple[str, ...] = ("deployment",)


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """A Deployment rollbackd may act on."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, default_namespace: str = DEFAULT_NAMESPACE) -> Target:
        ns, sep, name = text.partition("/")
        return cls(ns, name) if sep else cls(default_namespace, ns)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(str(data["namespace"]), str(data["name"]))


def target_from_labels(labels: Mapping[str, str]) -> Target | None:
    """The workload ``labels`` name, or ``None`` when none of ``WORKLOAD_LABELS`` is set."""
    for label in WORKLOAD_LABELS:
        name = labels.get(label)
        if name:
            return Target(labels.get(NAMESPACE_LABEL) or DEFAULT_NAMESPACE, name)
    return None
