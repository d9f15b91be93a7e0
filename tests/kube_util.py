"""Kubernetes helpers for the fault tests and the benchmarks: Deployments with history, their state, a watch.

Deployments are created at revision 1 (image ``:v1``) and moved to revision 2
(``:v2``), so an undo has a revision to go back to. ``TemplateWatch`` runs
``kubectl get deployments --watch`` and records, per Deployment, the first
moment the apiserver served it with a ``:v1`` template again: the PATCH of a
rollback as the apiserver's watchers see it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterable

from tests.stack.kube import KubeCluster

IMAGE = "registry.local/web"


def deploy_with_history(kube: KubeCluster, ns: str, names: Iterable[str], replicas: int = 1) -> None:
    """Create each Deployment at ``:v1``, roll all to ``:v2``, wait until every rollout finished."""
    names = list(names)
    for name in names:
        kube.kubectl("-n", ns, "create", "deployment", name, f"--image={IMAGE}:v1", f"--replicas={replicas}")
    for name in names:
        kube.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=180s", timeout=200)
    kube.kubectl("-n", ns, "set", "image", "deployment", "--all", f"web={IMAGE}:v2")
    for name in names:
        kube.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=180s", timeout=200)


def revision(kube: KubeCluster, ns: str, name: str) -> int:
    dep = kube.kubectl_json("-n", ns, "get", "deployment", name)
    return int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])  # type: ignore[index]


def rollout_state(kube: KubeCluster, ns: str, name: str) -> tuple[int, str, bool]:
    """(revision, image of the template, Ready): Ready once the controller saw the spec and every replica is up."""
    dep = kube.kubectl_json("-n", ns, "get", "deployment", name)
    spec, status = dep["spec"], dep.get("status", {})  # type: ignore[union-attr]
    image = spec["template"]["spec"]["containers"][0]["image"]  # type: ignore[index]
    ready = (
        status.get("observedGeneration", 0) >= dep["metadata"]["generation"]  # type: ignore[index]
        and status.get("updatedReplicas") == spec["replicas"]  # type: ignore[index]
        and status.get("availableReplicas") == spec["replicas"]  # type: ignore[index]
    )
    rev = int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])  # type: ignore[index]
    return rev, image, ready


class TemplateWatch:
    """``kubectl get deployments -w`` in a thread: when each Deployment was first seen back at ``:v1``."""

    def __init__(self, kube: KubeCluster, ns: str) -> None:
        template = '{.metadata.name} {.spec.template.spec.containers[0].image}{"\\n"}'
        argv = [
            str(kube.bin / "kubectl"),
            f"--kubeconfig={kube.kubeconfig}",
            "-n",
            ns,
            "get",
            "deployments",
            "--watch-only",
            "-o",
            f"jsonpath={template}",
        ]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.back_at_v1: dict[str, float] = {}
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(1.0)  # let the watch establish before anything changes

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            now = time.perf_counter()
            name, _, image = line.strip().partition(" ")
            if image.endswith(":v1"):
                with self._cond:
                    self.back_at_v1.setdefault(name, now)
                    self._cond.notify_all()

    def wait(self, name: str, timeout: float) -> float:
        """The moment ``name`` was seen at ``:v1``; raise TimeoutError if not within ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: name in self.back_at_v1, timeout):
                raise TimeoutError(f"deployment {name} not seen back at :v1 within {timeout}s")
            return self.back_at_v1[name]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(5)
