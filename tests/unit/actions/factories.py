"""Deployment and ReplicaSet JSON as the API server returns it, for the pure actions tests."""

from __future__ import annotations

from typing import Any

DEP_UID = "dep-uid-1"


def template(image: str, *, hash_: str | None = None, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": "web", **(extra_labels or {})}
    if hash_ is not None:
        labels["pod-template-hash"] = hash_
    return {
        "metadata": {"labels": labels, "creationTimestamp": None},
        "spec": {"containers": [{"name": "web", "image": image, "resources": {}}], "volumes": []},
    }


def replicaset(
    revision: str | None,
    image: str,
    *,
    name: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    owner: str = DEP_UID,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    hash_ = f"h{image.rsplit(':', 1)[-1]}"
    ann = dict(annotations or {})
    if revision is not None:
        ann["deployment.kubernetes.io/revision"] = revision
    return {
        "metadata": {
            "name": name or f"web-{hash_}",
            "namespace": "prod",
            "uid": f"rs-{hash_}",
            "creationTimestamp": created,
            "labels": {"app": "web", "pod-template-hash": hash_},
            "annotations": ann,
            "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner, "controller": True}],
        },
        "spec": {"template": template(image, hash_=hash_)},
    }


def deployment(
    image: str, revision: str, *, paused: bool = False, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "uid": DEP_UID,
            "generation": 5,
            "annotations": {"deployment.kubernetes.io/revision": revision, **(annotations or {})},
        },
        "spec": {
            "replicas": 2,
            "paused": paused,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(image),
        },
        "status": {"observedGeneration": 5},
    }


def history() -> list[dict[str, Any]]:
    """Three revisions v1, v2, v3, created in that order."""
    return [
        replicaset("1", "web:v1", created="2026-01-01T00:00:00Z", annotations={"note": "one"}),
        replicaset("2", "web:v2", created="2026-01-02T00:00:00Z", annotations={"note": "two"}),
        replicaset("3", "web:v3", created="2026-01-03T00:00:00Z", annotations={"note": "three"}),
    ]


WORKLOAD_UID = "sts-uid-1"


def workload(kind: str, image: str, *, partition: int | None = None, strategy: str = "RollingUpdate") -> dict[str, Any]:
    """A StatefulSet or DaemonSet as the API server serves it (defaults filled in)."""
    update: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate":
        update["rollingUpdate"] = {"partition": partition or 0} if kind == "StatefulSet" else {"maxUnavailable": 1}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": template(image),
        "updateStrategy": update,
        "revisionHistoryLimit": 10,
    }
    if kind == "StatefulSet":
        spec["replicas"] = 3
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "web", "namespace": "prod", "uid": WORKLOAD_UID, "generation": 3},
        "spec": spec,
        "status": {"observedGeneration": 3},
    }


def controller_revision(
    number: int, image: str, *, owner: str = WORKLOAD_UID, kind: str = "StatefulSet"
) -> dict[str, Any]:
    """A ControllerRevision as the StatefulSet/DaemonSet controller writes it: the template to restore."""
    hash_ = f"h{image.rsplit(':', 1)[-1]}"
    # The controllers label the hash differently; both name the revision <workload>-<hash>.
    hash_label = "controller.kubernetes.io/hash" if kind == "StatefulSet" else "controller-revision-hash"
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"web-{hash_}",
            "namespace": "prod",
            "labels": {"app": "web", hash_label: hash_},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": kind, "name": "web", "uid": owner, "controller": True}
            ],
        },
        "revision": number,
        "data": {"spec": {"template": {**template(image), "$patch": "replace"}}},
    }


def revision_history(kind: str = "StatefulSet") -> list[dict[str, Any]]:
    """Revisions 1..3 (v1..v3), listed out of order as the API may return them."""
    return [controller_revision(3, "web:v3", kind=kind), controller_revision(1, "web:v1", kind=kind),
            controller_revision(2, "web:v2", kind=kind)]  # fmt: skip
