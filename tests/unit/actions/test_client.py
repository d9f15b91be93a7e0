"""API errors become errors that say whether to retry, with the API server's message."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from daemon.actions.client import KubeApiError, KubeUnavailableError, map_api_error


def api_exception(status: int, message: str = "", headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status}) if message else None
    exc.headers = headers
    return exc


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "k8s_forbidden"), (404, "k8s_not_found"), (422, "k8s_invalid"), (418, "k8s_rejected")],
)
def test_4xx_is_permanent(status: int, reason: str) -> None:
    err = map_api_error(api_exception(status, 'deployments.apps "web" is forbidden'), "patch deployment prod/web")
    assert isinstance(err, KubeApiError)
    assert not err.retriable
    assert (err.status, err.reason) == (status, reason)
    assert str(err) == 'patch deployment prod/web: deployments.apps "web" is forbidden'


def test_429_is_temporary_with_retry_after() -> None:
    err = map_api_error(api_exception(429, "slow down", {"Retry-After": "3"}), "get")
    assert isinstance(err, KubeUnavailableError)
    assert err.retriable
    assert (err.reason, err.delay) == ("k8s_throttled", 3.0)


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_is_temporary(status: int) -> None:
    err = map_api_error(api_exception(status), "get deployment prod/web")
    assert isinstance(err, KubeUnavailableError)
    assert err.reason == "k8s_unavailable"
    assert str(err) == "get deployment prod/web: Reason"
