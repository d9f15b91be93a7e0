"""Evaluates the threshold rules rollbackd owns (``evaluated_by: rollbackd``) with Prometheus' ``for`` semantics.

A source like the webhooks: for teams that cannot change their Prometheus
rules, the poller queries each rule's PromQL on an interval and writes the
resulting firing and resolved alerts (source ``poller``, ``alertname`` = the rule,
label ``rollbackd_rule``) into the inbox, one alert per series.

Per series: a breach starts *pending*; after ``for_s`` of continuous breach it
*fires* (``startsAt`` = when it became pending, as Prometheus does); a healthy
value resolves it. **No data** — an empty result, NaN, or a failed query — is
neither healthy nor a breach: a firing alert stays firing, a pending one starts
over, and nothing new fires. It is reported through the ``NO_DATA`` gauge, one
log line when it starts and ends, and ``on_no_data(spec, since)`` once it has
lasted ``no_data_notify_after_s``. It never triggers a rollback by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from daemon.clock import Clock, sleep_unless
from daemon.errors import RollbackdError, TemporaryError
from daemon.logs import get_logger
from daemon.metrics import NO_DATA
from daemon.model import Alert, AlertStatus, ThresholdSpec, frozen_map
from daemon.sources.common import fingerprint
from daemon.sources.prometheus_query import Sample
from daemon.target import target_from_labels

log = get_logger(__name__)

SOURCE = "poller"
SeriesKey = tuple[tuple[str, str], ...]
NoDataCallback = Callable[[ThresholdSpec, datetime], Awaitable[None]]


MAX_UNSENT = 1000  # alerts kept for the next round while the inbox refuses them


class Query(Protocol):
    """What the poller needs of Prometheus (``PrometheusQuery`` implements it)."""

    async def samples(self, promql: str) -> list[Sample]: ...


class AlertSink(Protocol):
    """Where alerts go (``daemon.ingest.Inbox``); declared here so sources do not import ingest."""

    async def accept_alerts(self, alerts: Sequence[Alert]) -> object: ...


@dataclass
class _SeriesState:
    labels: Mapping[str, str]
    active_since: datetime  # start of the current continuous breach (pending or firing)
    firing: bool = False
    value: float = 0.0


@dataclass
class _RuleState:
    series: dict[SeriesKey, _SeriesState]
    no_data_since: datetime | None = None
    no_data_notified: bool = False
    unsent: list[Alert] = field(default_factory=list)  # the inbox could not take them yet


class ThresholdPoller:
    """Turns PromQL threshold rules into inbox alerts on an interval."""

    def __init__(
        self,
        query: Query,
        specs_provider: Callable[[], Sequence[ThresholdSpec]],
        inbox: AlertSink,
        clock: Clock,
        *,
        interval_s: float = 15.0,
        no_data_notify_after_s: float = 300.0,
        on_no_data: NoDataCallback | None = None,
        max_parallel_queries: int = 4,
    ) -> None:
        self._query = query
        self._specs = specs_provider
        self._inbox = inbox
        self._clock = clock
        self._interval_s = interval_s
        self._notify_after = timedelta(seconds=no_data_notify_after_s)
        self._on_no_data = on_no_data
        self._limit = asyncio.Semaphore(max_parallel_queries)
        self._rules: dict[str, _RuleState] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Evaluate every interval until ``stop()``."""
        self._stopping.clear()
        while not self._stopping.is_set():
            await self.evaluate_once()
            await sleep_unless(self._clock, self._interval_s, self._stopping)

    def stop(self) -> None:
        self._stopping.set()

    async def evaluate_once(self) -> None:
        """One round over the rules the daemon evaluates itself."""
        specs = [s for s in self._specs() if s.evaluated_by == "rollbackd"]
        for gone in set(self._rules) - {s.name for s in specs}:
            del self._rules[gone]  # rule removed by a reload: forget its state and gauge
            NO_DATA.remove(gone)
        await asyncio.gather(*(self._evaluate(spec) for spec in specs))

    async def _evaluate(self, spec: ThresholdSpec) -> None:
        state = self._rules.setdefault(spec.name, _RuleState(series={}))
        async with self._limit:
            try:
                samples = await self._query.samples(spec.expr)
                error = ""
            except RollbackdError as exc:
                samples, error = [], str(exc)
        now = self._clock.now()
        if not samples:
            await self._no_data(spec, state, now, error)
        else:
            self._data_back(spec, state)
            for sample in samples:
                alert = self._step(spec, state, sample, now)
                if alert is not None:
                    state.unsent.append(alert)
        await self._deliver(state)

    def _step(self, spec: ThresholdSpec, state: _RuleState, sample: Sample, now: datetime) -> Alert | None:
        """Advance one series; the alert to send when it started or stopped firing."""
        key: SeriesKey = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "__name__"))
        current = state.series.get(key)
        if spec.comparator.holds(sample.value, spec.threshold):
            if current is None:
                current = state.series[key] = _SeriesState(labels=dict(key), active_since=now)
            current.value = sample.value
            held = (now - current.active_since).total_seconds()
            if not current.firing and held >= spec.for_s:
                current.firing = True
                return self._alert(spec, current, AlertStatus.FIRING, None)
            return None
        if current is None:
            return None
        del state.series[key]
        if not current.firing:
            return None  # pending that never fired: nothing to tell
        current.value = sample.value
        return self._alert(spec, current, AlertStatus.RESOLVED, now)

    def _alert(self, spec: ThresholdSpec, series: _SeriesState, status: AlertStatus, ends_at: datetime | None) -> Alert:
        labels = {
            **series.labels,
            **spec.labels,
            "alertname": spec.name,
            "rollbackd_rule": spec.name,
            "severity": spec.severity.value,
        }
        return Alert(
            name=spec.name,
            status=status,
            labels=frozen_map(labels),
            annotations=frozen_map(spec.annotations),
            starts_at=series.active_since,
            ends_at=ends_at,
            fingerprint=fingerprint(labels),
            source=SOURCE,
            target=target_from_labels(labels),
            value=series.value,
        )

    async def _deliver(self, state: _RuleState) -> None:
        if not state.unsent:
            return
        try:
            await self._inbox.accept_alerts(list(state.unsent))
        except TemporaryError as exc:  # includes QueueFullError: keep them and try next round
            log.warning("poller could not write alerts, will retry", error=str(exc), count=len(state.unsent))
            del state.unsent[:-MAX_UNSENT]
            return
        state.unsent.clear()

    async def _no_data(self, spec: ThresholdSpec, state: _RuleState, now: datetime, error: str) -> None:
        NO_DATA.labels(rule=spec.name).set(1)
        # Pending needs continuous evidence of a breach; a gap is not evidence. Firing stays firing.
        state.series = {k: v for k, v in state.series.items() if v.firing}
        if state.no_data_since is None:
            state.no_data_since = now
            log.warning("threshold rule has no data", rule=spec.name, expr=spec.expr, error=error or "empty result")
        if not state.no_data_notified and now - state.no_data_since >= self._notify_after:
            state.no_data_notified = True
            if self._on_no_data is not None:
                await self._on_no_data(spec, state.no_data_since)

    def _data_back(self, spec: ThresholdSpec, state: _RuleState) -> None:
        NO_DATA.labels(rule=spec.name).set(0)
        if state.no_data_since is not None:
            log.info("threshold rule has data again", rule=spec.name, since=state.no_data_since.isoformat())
            state.no_data_since = None
            state.no_data_notified = False
