"""The threshold poller: Prometheus' `for` semantics, and no-data that is neither healthy nor a breach."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.errors import QueueFullError, TemporaryError
from daemon.metrics import NO_DATA
from daemon.model import Alert, AlertStatus, Comparator, Severity, ThresholdSpec, frozen_map
from daemon.sources.poller import ThresholdPoller
from daemon.sources.prometheus_query import Sample

SPEC = ThresholdSpec(
    name="ErrorRateHigh",
    expr="error_ratio",
    comparator=Comparator.GT,
    threshold=0.01,
    for_s=60,
    severity=Severity.P1,
    labels=frozen_map({"team": "shop"}),
    evaluated_by="rollbackd",
)
SERIES = frozen_map({"__name__": "error_ratio", "namespace": "shop", "deployment": "web"})


class FakeQuery:
    """Answers with whatever the test sets: a value, nothing, or an error."""

    def __init__(self) -> None:
        self.answer: float | Exception | None = None

    async def samples(self, promql: str) -> list[Sample]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return [] if self.answer is None else [Sample(SERIES, self.answer)]


class Sink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.refuse = False

    async def accept_alerts(self, alerts: Sequence[Alert]) -> object:
        if self.refuse:
            raise QueueFullError()
        self.alerts.extend(alerts)
        return None


@pytest.fixture
def setup(clock: FakeClock) -> tuple[FakeQuery, Sink, list[tuple[str, datetime]], ThresholdPoller]:
    query, sink, notified = FakeQuery(), Sink(), []

    async def on_no_data(spec: ThresholdSpec, since: datetime) -> None:
        notified.append((spec.name, since))

    ignored = ThresholdSpec("PromOwned", "x", Comparator.GT, 0, 0, Severity.P3)  # evaluated by Prometheus
    poller = ThresholdPoller(
        query, lambda: [SPEC, ignored], sink, clock, interval_s=15, no_data_notify_after_s=120, on_no_data=on_no_data
    )
    return query, sink, notified, poller


async def step(
    clock: FakeClock, poller: ThresholdPoller, answer: object, query: FakeQuery, seconds: float = 15
) -> None:
    query.answer = answer  # type: ignore[assignment]
    await poller.evaluate_once()
    await clock.advance(seconds)


async def test_breach_fires_after_for_and_resolves_when_healthy(clock: FakeClock, setup) -> None:  # type: ignore[no-untyped-def]
    query, sink, _, poller = setup
    start = clock.now()
    for _ in range(4):  # 0, 15, 30, 45 s: pending
        await step(clock, poller, 0.05, query)
    assert sink.alerts == []
    await step(clock, poller, 0.06, query)  # 60 s of breach: fires
    (firing,) = sink.alerts
    assert firing.status is AlertStatus.FIRING
    assert firing.name == "ErrorRateHigh"
    assert firing.source == "poller"
    assert firing.labels["rollbackd_rule"] == "ErrorRateHigh"
    assert firing.labels["deployment"] == "web"
    assert firing.labels["team"] == "shop"
    assert "__name__" not in firing.labels
    assert firing.starts_at == start  # when it became pending, as Prometheus does
    assert firing.value == pytest.approx(0.06)
    await step(clock, poller, 0.07, query)
    assert len(sink.alerts) == 1  # still firing: nothing new
    await step(clock, poller, 0.0, query)
    resolved = sink.alerts[-1]
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.starts_at == firing.starts_at


async def test_no_data_never_fires_and_is_reported(clock: FakeClock, setup) -> None:  # type: ignore[no-untyped-def]
    query, sink, notified, poller = setup
    start = clock.now()
    with capture_logs() as logs:
        for i in range(20):  # five minutes of nothing and of failures
            await step(clock, poller, None if i % 2 else TemporaryError("connection refused"), query)
    assert sink.alerts == []
    assert NO_DATA.labels(rule="ErrorRateHigh")._value.get() == 1
    assert notified == [("ErrorRateHigh", start)]  # once, after 120 s
    assert sum(1 for e in logs if e["event"] == "threshold rule has no data") == 1
    await step(clock, poller, 0.0, query)
    assert NO_DATA.labels(rule="ErrorRateHigh")._value.get() == 0


async def test_a_gap_restarts_pending_and_does_not_resolve_firing(clock: FakeClock, setup) -> None:  # type: ignore[no-untyped-def]
    query, sink, _, poller = setup
    for _ in range(3):
        await step(clock, poller, 0.5, query)  # 30 s pending
    await step(clock, poller, None, query)  # gap
    for _ in range(4):
        await step(clock, poller, 0.5, query)
    assert sink.alerts == []  # 45 s since the gap: not yet
    await step(clock, poller, 0.5, query)
    assert [a.status for a in sink.alerts] == [AlertStatus.FIRING]
    for _ in range(3):
        await step(clock, poller, None, query)
    assert [a.status for a in sink.alerts] == [AlertStatus.FIRING]  # no data is not healthy


async def test_alerts_the_inbox_refused_are_sent_next_round(clock: FakeClock, setup) -> None:  # type: ignore[no-untyped-def]
    query, sink, _, poller = setup
    sink.refuse = True
    for _ in range(6):
        await step(clock, poller, 0.5, query)
    assert sink.alerts == []
    sink.refuse = False
    await step(clock, poller, 0.5, query)
    assert [a.status for a in sink.alerts] == [AlertStatus.FIRING]
    assert sink.alerts[0].starts_at == clock.now() - timedelta(seconds=7 * 15)


async def test_run_evaluates_on_the_interval_until_stopped(clock: FakeClock, setup) -> None:  # type: ignore[no-untyped-def]
    query, sink, _, poller = setup
    query.answer = 1.0
    task = asyncio.create_task(poller.run())
    for _ in range(6):
        for _ in range(30):  # let the poller finish its round and go back to sleep
            await asyncio.sleep(0)
        await clock.advance(15)
    poller.stop()
    await task
    assert [a.status for a in sink.alerts] == [AlertStatus.FIRING]
