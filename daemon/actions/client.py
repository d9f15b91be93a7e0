"""The Kubernetes API as the actions stage uses it: raw JSON, bounded, with errors that say whether to retry.

``connect`` builds an ``ApiClient`` from the settings (a kubeconfig file and
context, the in-cluster ServiceAccount, or ``~/.kube/config``) and returns
``None`` when no cluster answers, so the daemon can fall back to dry-run.
``KubeApi`` wraps the client with the calls a rollback needs (the workload of
any kind, its ReplicaSets or ControllerRevisions, its pods) and keeps
objects as the API server's JSON: ``undo`` must copy a pod template exactly,
and the generated models would drop fields they do not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from daemon.config import KubernetesSettings
from daemon.errors import ConfigError, PermanentError, TemporaryError
from daemon.logs import get_logger
from daemon.target import Target

log = get_logger(__name__)

# The client the wiring builds and hands to the executor, the leader election and the probes,
# named here so that nothing outside ``actions`` imports kubernetes_asyncio.
KubeClient: TypeAlias = ApiClient

PatchType = Literal["json", "merge", "strategic"]
_CONTENT_TYPES: Mapping[PatchType, str] = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
_LIST_PAGE = 500


class KubeApiError(PermanentError):
    """The API server refused a request (4xx); ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.status = status


class KubeUnavailableError(TemporaryError):
    """The API server could not answer now (5xx, 429, timeout, connection)."""


_PERMANENT_REASONS = {
    400: "k8s_bad_request",
    401: "k8s_unauthorized",
    403: "k8s_forbidden",
    404: "k8s_not_found",
    409: "k8s_conflict",
    422: "k8s_invalid",
}


def _workload_path(target: Target) -> str:
    return f"/apis/apps/v1/namespaces/{target.namespace}/{target.kind.resource}/{target.name}"


def map_api_error(exc: ApiException, what: str) -> KubeApiError | KubeUnavailableError:
    """Turn an ``ApiException`` into our error, with the API server's own message."""
    status = int(exc.status or 0)
    message = _status_message(exc.body) or str(exc.reason or "")
    text = f"{what}: {message}" if message else f"{what}: HTTP {status}"
    if status == 429 or status >= 500 or status == 0:
        delay = _retry_after(exc.headers)
        return KubeUnavailableError(text, reason="k8s_throttled" if status == 429 else "k8s_unavailable", delay=delay)
    return KubeApiError(text, status=status, reason=_PERMANENT_REASONS.get(status, "k8s_rejected"))


def _status_message(body: Any) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300]
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class KubeApi:
    """Workloads and their history as JSON, every call bounded by ``request_timeout_s``."""

    def __init__(self, api: ApiClient, request_timeout_s: float) -> None:
        self.api = api
        self.timeout_s = request_timeout_s

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        try:
            result = await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object", 202: "object"},
                _return_http_data_only=True,
                _request_timeout=self.timeout_s,
            )
        except ApiException as exc:
            raise map_api_error(exc, what) from None
        except TimeoutError:
            raise KubeUnavailableError(f"{what}: no answer within {self.timeout_s:g}s", reason="k8s_timeout") from None
        except aiohttp.ClientError as exc:
            raise KubeUnavailableError(f"{what}: {type(exc).__name__}: {exc}", reason="k8s_connection") from None
        if not isinstance(result, dict):
            raise KubeUnavailableError(f"{what}: unexpected answer", reason="k8s_unavailable")
        return result

    async def get_workload(self, target: Target) -> dict[str, Any]:
        """The Deployment, StatefulSet or DaemonSet ``target`` names."""
        what = f"get {target.kind.value} {target.namespace}/{target.name}"
        return await self._call("GET", _workload_path(target), what)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.get_workload(Target(namespace, name))

    async def _list(self, namespace: str, resource: str, label_selector: str) -> list[dict[str, Any]]:
        """Every object matching the selector, following ``continue`` like kubectl."""
        group = "/api/v1" if resource == "pods" else "/apis/apps/v1"
        path = f"{group}/namespaces/{namespace}/{resource}"
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", str(_LIST_PAGE))]
            if cont:
                query.append(("continue", cont))
            page = await self._call("GET", path, f"list {resource} in {namespace}", query=query)
            items.extend(page.get("items") or [])
            cont = str((page.get("metadata") or {}).get("continue") or "")
            if not cont:
                return items

    async def list_replicasets(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await self._list(namespace, "replicasets", label_selector)

    async def list_controllerrevisions(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The history of StatefulSets and DaemonSets (what ``kubectl rollout history`` reads)."""
        return await self._list(namespace, "controllerrevisions", label_selector)

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await self._list(namespace, "pods", label_selector)

    async def delete_pod(self, namespace: str, name: str, uid: str) -> dict[str, Any]:
        """Delete this pod, only if it is still the one with ``uid``: a pod recreated meanwhile is never deleted.

        The API server answers 409 when the precondition fails and 404 when no such pod is left.
        """
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        return await self._call("DELETE", path, f"delete pod {namespace}/{name}", body=body)

    async def patch_workload(
        self, target: Target, body: Any, *, patch_type: PatchType, dry_run: bool = False
    ) -> dict[str, Any]:
        query = [("dryRun", "All")] if dry_run else []
        return await self._call(
            "PATCH",
            _workload_path(target),
            f"patch {target.kind.value} {target.namespace}/{target.name}",
            query=query,
            body=body,
            content_type=_CONTENT_TYPES[patch_type],
        )

    async def patch_deployment(
        self, namespace: str, name: str, body: Any, *, patch_type: PatchType, dry_run: bool = False
    ) -> dict[str, Any]:
        return await self.patch_workload(Target(namespace, name), body, patch_type=patch_type, dry_run=dry_run)

    async def request(self, method: str, path: str, what: str, body: Any = None) -> dict[str, Any]:
        """Any other object as JSON (the leader's Lease)."""
        return await self._call(method, path, what, body=body)

    async def version(self) -> dict[str, Any]:
        return await self._call("GET", "/version", "get /version")


async def build_api_client(settings: KubernetesSettings) -> ApiClient:
    """An ApiClient from the kubeconfig file (and context), in-cluster, or ``~/.kube/config``."""
    configuration = k8s.Configuration()
    try:
        if settings.kubeconfig is not None:
            await k8s_config.load_kube_config(
                config_file=str(settings.kubeconfig),
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except ConfigException:
                await k8s_config.load_kube_config(
                    config_file=None,  # the library's default: $KUBECONFIG, else ~/.kube/config
                    context=settings.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"kubernetes: no usable configuration: {exc}") from None
    return ApiClient(configuration=configuration)


def api_client_for_token(server: str, token: str, ca_file: Path) -> ApiClient:
    """An ApiClient that authenticates with a bearer token (a ServiceAccount token)."""
    configuration = k8s.Configuration(host=server)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.ssl_ca_cert = str(ca_file)
    return ApiClient(configuration=configuration)


async def connect(settings: KubernetesSettings) -> ApiClient | None:
    """The ApiClient if a cluster answers ``/version`` in time, else None (logged, with the reason)."""
    try:
        api = await build_api_client(settings)
    except ConfigError as exc:
        log.warning("kubernetes.unconfigured", reason=str(exc))
        return None
    try:
        info = await KubeApi(api, settings.request_timeout_s).version()
    except (KubeUnavailableError, KubeApiError) as exc:
        log.warning("kubernetes.unreachable", reason=str(exc), host=api.configuration.host)
        await api.close()
        return None
    log.info("kubernetes.connected", host=api.configuration.host, version=info.get("gitVersion", "?"))
    return api
