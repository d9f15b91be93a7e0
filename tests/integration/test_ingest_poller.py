"""The poller against the real Prometheus: real values fire after `for`, an empty query never fires."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from daemon.clock import FakeClock
from daemon.errors import TemporaryError
from daemon.ingest import Inbox
from daemon.metrics import NO_DATA
from daemon.model import Comparator, Severity, ThresholdSpec
from daemon.sources.poller import ThresholdPoller
from daemon.sources.prometheus_query import PrometheusQuery
from daemon.store.db import Store
from tests.inbox_util import unprocessed
from tests.stack.exporter import Exporter
from tests.stack.prometheus import Prometheus

pytestmark = pytest.mark.integration


def spec(name: str, expr: str) -> ThresholdSpec:
    return ThresholdSpec(name, expr, Comparator.GT, 0.05, 30, Severity.P1, evaluated_by="rollbackd")


def wait_scraped(prometheus: Prometheus, expr: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prometheus.query(expr):
            return
        time.sleep(0.2)
    pytest.fail(f"prometheus never had {expr}")


async def test_no_data_never_fires_while_real_breaches_do(
    prometheus: Prometheus, exporter: Exporter, store: Store, clock: FakeClock
) -> None:
    exporter.set("poller_error_ratio", 0.5, labels={"namespace": "shop", "deployment": "web"})
    prometheus.configure(scrape_targets=[exporter.address], rules="groups: []\n")
    wait_scraped(prometheus, "poller_error_ratio")
    inbox = Inbox(store, clock)
    notified: list[tuple[str, datetime]] = []

    async def on_no_data(s: ThresholdSpec, since: datetime) -> None:
        notified.append((s.name, since))

    specs = [spec("PollerBreach", "poller_error_ratio"), spec("PollerNoData", 'absent_metric_xyz{job="none"}')]
    query = PrometheusQuery(prometheus.url, timeout=5)
    poller = ThresholdPoller(
        query, lambda: specs, inbox, clock, interval_s=15, no_data_notify_after_s=60, on_no_data=on_no_data
    )
    for _ in range(6):  # 75 s of fake time, real queries
        await poller.evaluate_once()
        await clock.advance(15)
    names = [(i.alert.name, i.alert.status.value) for i in await unprocessed(inbox, 50) if i.alert]
    assert names == [("PollerBreach", "firing")]
    assert NO_DATA.labels(rule="PollerNoData")._value.get() == 1
    assert [n for n, _ in notified] == ["PollerNoData"]
    assert await query.value("poller_error_ratio") == pytest.approx(0.5)
    assert await query.value("absent_metric_xyz") is None


async def test_an_unreachable_prometheus_is_a_temporary_error_not_a_value() -> None:
    query = PrometheusQuery("http://127.0.0.1:9", timeout=2)
    with pytest.raises(TemporaryError):
        await query.value("up")
