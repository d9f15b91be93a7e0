"""The poller and verification through a Prometheus that requires basic auth over TLS, and without the credentials.

``secured_prometheus`` runs with ``--web.config.file`` (HTTPS with a
certificate from its own test CA, basic auth on every endpoint). The client
is built as the daemon builds it — ``load_settings`` from the operator's
YAML, then ``PrometheusQuery.from_settings``, the one client ``wiring`` gives
the poller and the executor's verification — with the password in a file and a
tenant header as Mimir wants. Without credentials, or without the CA, every
query fails with an error naming the setting to fix; the poller reports no
data (never a breach, never healthy) and verification fails saying why.
When the web config also demands a client certificate (mutual TLS), the
client sends the one in ``prometheus.tls``. Bearer tokens and the tenant
header, which Prometheus does not check, are checked by a multi-tenant front
end (``tests.stack.tenant_gateway``, as Mimir's gateway answers) relaying to
the real Prometheus.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.actions.verify import verify
from daemon.clock import FakeClock
from daemon.config import load_settings
from daemon.errors import TemporaryError
from daemon.ingest import Inbox
from daemon.metrics import NO_DATA
from daemon.model import Comparator, Severity, ThresholdSpec, VerifySpec
from daemon.sources.poller import ThresholdPoller
from daemon.sources.prometheus_query import PrometheusQuery
from daemon.store.db import Store
from tests.fakes.tls import TestCa
from tests.inbox_util import unprocessed
from tests.stack.exporter import Exporter
from tests.stack.prometheus import Prometheus, SecuredPrometheus
from tests.stack.tenant_gateway import TenantGateway

pytestmark = pytest.mark.integration


def _query(prometheus: SecuredPrometheus, tmp_path: Path, **overrides: Any) -> PrometheusQuery:
    password = tmp_path / "prometheus-password"
    password.write_text(prometheus.password + "\n")
    cfg: dict[str, Any] = {
        "url": prometheus.url,
        "query_timeout_s": 5,
        "basic_auth": {"username": prometheus.username, "password": {"file": str(password)}},
        "tls": {"ca_file": str(prometheus.ca.cert)},
        "headers": {"X-Scope-OrgID": "team-checkout"},
    }
    cfg.update(overrides)
    return PrometheusQuery.from_settings(load_settings(None, prometheus=cfg).prometheus)


def _scraped(prometheus: Prometheus, exporter: Exporter, metric: str) -> None:
    exporter.set(metric, 0.5, labels={"namespace": "shop", "deployment": "web"})
    prometheus.configure(scrape_targets=[exporter.address], rules="groups: []\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if prometheus.query(metric):
            return
        time.sleep(0.2)
    pytest.fail(f"prometheus never had {metric}")


def _spec(name: str, expr: str) -> ThresholdSpec:
    return ThresholdSpec(name, expr, Comparator.GT, 0.05, 0, Severity.P1, evaluated_by="rollbackd")


async def test_poller_and_verification_work_with_basic_auth_over_tls(
    secured_prometheus: SecuredPrometheus, exporter: Exporter, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    _scraped(secured_prometheus, exporter, "secured_error_ratio")
    query = _query(secured_prometheus, tmp_path)
    inbox = Inbox(store, clock)
    poller = ThresholdPoller(query, lambda: [_spec("SecuredBreach", "secured_error_ratio")], inbox, clock)
    await poller.evaluate_once()
    alerts = [(i.alert.name, i.alert.status.value, i.alert.value) for i in await unprocessed(inbox, 10) if i.alert]
    assert alerts == [("SecuredBreach", "firing", 0.5)]
    assert NO_DATA.labels(rule="SecuredBreach")._value.get() == 0
    healthy = VerifySpec(promql="max(secured_error_ratio)", comparator=Comparator.LT, threshold=0.9, within_s=5)
    result = await verify(healthy, clock, query)
    assert result.ok, result.detail


async def test_without_credentials_or_ca_every_query_fails_naming_the_setting(
    secured_prometheus: SecuredPrometheus, exporter: Exporter, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    _scraped(secured_prometheus, exporter, "secured_error_ratio")
    anonymous = _query(secured_prometheus, tmp_path, basic_auth=None)
    with pytest.raises(TemporaryError) as refused:
        await anonymous.samples("secured_error_ratio")
    assert refused.value.reason == "unauthorized"
    assert "401" in str(refused.value)
    assert "prometheus.basic_auth" in str(refused.value)

    untrusted = _query(secured_prometheus, tmp_path, tls=None)
    with pytest.raises(TemporaryError) as unverified:
        await untrusted.samples("secured_error_ratio")
    assert unverified.value.reason == "tls"
    assert "prometheus.tls.ca_file" in str(unverified.value)
    assert secured_prometheus.password not in str(unverified.value)

    inbox = Inbox(store, clock)
    poller = ThresholdPoller(anonymous, lambda: [_spec("SecuredRefused", "secured_error_ratio")], inbox, clock)
    with capture_logs() as logs:
        await poller.evaluate_once()
    assert await unprocessed(inbox, 10) == []  # no data: never a breach
    assert NO_DATA.labels(rule="SecuredRefused")._value.get() == 1
    (line,) = [e for e in logs if e["event"] == "threshold rule has no data"]
    assert "prometheus.basic_auth" in line["error"]

    spec = VerifySpec(promql="max(secured_error_ratio)", comparator=Comparator.LT, threshold=0.9, within_s=0)
    result = await verify(spec, clock, anonymous)
    assert not result.ok
    assert "prometheus.basic_auth" in result.detail


async def test_a_client_certificate_is_sent_when_prometheus_requires_one(
    secured_prometheus: SecuredPrometheus, exporter: Exporter, clock: FakeClock, tmp_path: Path
) -> None:
    _scraped(secured_prometheus, exporter, "secured_error_ratio")
    with secured_prometheus.requiring_client_certificates() as cert:
        without = _query(secured_prometheus, tmp_path)
        with pytest.raises(TemporaryError) as refused:
            await without.samples("secured_error_ratio")
        assert refused.value.reason == "tls"
        assert "prometheus.tls.cert_file" in str(refused.value)

        tls = {"ca_file": str(secured_prometheus.ca.cert), "cert_file": str(cert.cert), "key_file": str(cert.key)}
        mutual = _query(secured_prometheus, tmp_path, tls=tls)
        assert [s.value for s in await mutual.samples("secured_error_ratio")] == [0.5]
        spec = VerifySpec(promql="max(secured_error_ratio)", comparator=Comparator.LT, threshold=0.9, within_s=5)
        result = await verify(spec, clock, mutual)
        assert result.ok, result.detail


async def test_a_bearer_token_and_the_tenant_header_reach_a_multi_tenant_front_end(
    prometheus: Prometheus, exporter: Exporter, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    _scraped(prometheus, exporter, "tenant_error_ratio")
    ca = TestCa.create(tmp_path / "ca", "rollbackd-test-gateway-ca")
    token = "gw-" + uuid.uuid4().hex
    gateway = TenantGateway(prometheus.url, ca.issue(tmp_path / "tls", "gateway"), token=token, tenant="team-checkout")
    gateway.start()
    try:
        (tmp_path / "token").write_text(token + "\n")
        cfg: dict[str, Any] = {
            "url": gateway.url, "query_timeout_s": 5, "bearer_token": {"file": str(tmp_path / "token")},
            "tls": {"ca_file": str(ca.cert)}, "headers": {"X-Scope-OrgID": "team-checkout"},
        }  # fmt: skip
        query = PrometheusQuery.from_settings(load_settings(None, prometheus=cfg).prometheus)
        inbox = Inbox(store, clock)
        poller = ThresholdPoller(query, lambda: [_spec("TenantBreach", "tenant_error_ratio")], inbox, clock)
        await poller.evaluate_once()
        alerts = [(i.alert.name, i.alert.value) for i in await unprocessed(inbox, 10) if i.alert]
        assert alerts == [("TenantBreach", 0.5)]
        assert {(h.get("Authorization"), h.get("X-Scope-OrgID")) for h in gateway.seen} == {
            (f"Bearer {token}", "team-checkout")
        }

        no_tenant = PrometheusQuery.from_settings(load_settings(None, prometheus=cfg | {"headers": {}}).prometheus)
        with pytest.raises(TemporaryError) as refused:
            await no_tenant.samples("tenant_error_ratio")
        assert refused.value.reason == "unauthorized"
        assert "prometheus.headers" in str(refused.value)
        assert token not in str(refused.value)
    finally:
        gateway.stop()
