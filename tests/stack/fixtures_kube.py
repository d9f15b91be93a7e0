"""Pytest plugin: a real Kubernetes control plane for the session, and a fresh namespace per test.

Load it with ``-p tests.stack.fixtures_kube``. A cluster that cannot start fails the
session with the reason (and every component's log tail); it never skips.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.stack.base import StackError
from tests.stack.kube import KubeCluster, describe_failure


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """etcd + kube-apiserver + controller-manager + scheduler + KWOK node ``kwok-node-0``."""
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"))
    try:
        info = cluster.start()
    except StackError as exc:
        raise StackError(f"Kubernetes test cluster did not start: {exc}") from exc
    except Exception as exc:
        raise StackError(f"Kubernetes test cluster did not start: {exc!r}\n{describe_failure(cluster)}") from exc
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
    print(f"\nkube: {info['server']} kubeconfig={info['kubeconfig']} ({timings})")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def namespace(kube: KubeCluster) -> Iterator[str]:
    """A namespace of its own for one test; deleted afterwards without waiting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def kube_api(kube: KubeCluster) -> AsyncIterator[Any]:
    """The daemon's own Kubernetes API client for the test cluster, closed after the test."""
    from daemon.actions.client import build_api_client  # noqa: PLC0415 - only tests on the cluster need it
    from daemon.config import KubernetesSettings  # noqa: PLC0415

    api = await build_api_client(KubernetesSettings(kubeconfig=kube.kubeconfig))
    try:
        yield api
    finally:
        await api.close()
