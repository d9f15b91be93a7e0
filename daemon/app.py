"""Owns the daemon's lifecycle: builds every component, runs them, stops them in order.

Start-up: store (migrated) → rules → Kubernetes (dry-run, loudly, if no
cluster answers) → leader election → executor → incidents → inbox and
dispatcher → outbox → Kafka consumer and poller → HTTP server. Signals only
set events: SIGTERM/SIGINT stop, SIGHUP reloads the rules. Shutdown runs the
registered teardown steps last-first within one time budget; an in-flight
rollback is left to the executor's intent log and reconciled at next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from daemon.actions.client import connect
from daemon.actions.executor import RollbackExecutor
from daemon.actions.leader import LeaderElector
from daemon.api.app import build_app
from daemon.api.auth import TokenAuth
from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.errors import ConfigError
from daemon.incidents.service import IncidentService
from daemon.ingest.dispatcher import Dispatcher
from daemon.ingest.history import DeployHistoryStore
from daemon.ingest.inbox import Inbox
from daemon.logs import configure_logging, get_logger
from daemon.notify.outbox import OutboxWorker
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.slack import SlackNotifier
from daemon.pipeline import Pipeline
from daemon.rules import RuleRegistry
from daemon.sources.kafka import DeployConsumer
from daemon.sources.poller import ThresholdPoller
from daemon.sources.prometheus_query import PrometheusQuery
from daemon.sources.publisher import DecisionPublisher
from daemon.store.db import Store
from daemon.tasks import Teardown, cancel_all, guarded

log = get_logger(__name__)

SHUTDOWN_BUDGET_S = 25.0  # below Kubernetes' default 30 s termination grace period


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: signals belong to ``run_daemon``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class Daemon:
    """Every component of one running rollbackd, reachable for tests and the API."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    components: dict[str, Any] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _teardown: Teardown = field(default_factory=Teardown)
    _server: _Server | None = None
    _http_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The HTTP port actually bound (useful with ``http.port: 0``)."""
        assert self._server is not None and self._server.servers, "daemon not started"  # noqa: S101
        sock = self._server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    def _spawn(self, name: str, coro: Any) -> None:
        guarded(coro, name=name, stop=self.stop_event, tasks=self._tasks)

    async def start(self) -> None:  # noqa: PLR0915 - the one place that wires everything, in order
        s, clock = self.settings, self.clock
        self._teardown.push("background tasks", lambda: cancel_all(self._tasks))

        password = s.store.password.read() if s.store.password else None
        store = Store(s.store.url, password=password)
        self._teardown.push("store", store.close)
        if s.store.auto_upgrade:
            await store.upgrade()
        log.info("store ready", url=store.safe_url)

        rules = RuleRegistry(list(s.rules.paths), clock)
        rules.load()
        log.info("rules loaded", rules=rules.current.rule_count, paths=[str(p) for p in s.rules.paths])

        api_client = await connect(s.kubernetes)
        if api_client is not None:
            self._teardown.push("kubernetes client", api_client.close)
        dry_run = s.kubernetes.dry_run if s.kubernetes.dry_run is not None else api_client is None
        if api_client is None:
            log.warning(
                "NO KUBERNETES CLUSTER REACHABLE: every rollback is a DRY RUN until rollbackd restarts with one",
            )
        elif dry_run:
            log.warning("DRY-RUN MODE: rollbacks are validated by the API server but change nothing")

        leader: LeaderElector | None = None
        if s.kubernetes.leader_election.enabled and api_client is not None:
            leader = LeaderElector(api_client, s.kubernetes.leader_election, s.instance)
            self._spawn("leader-election", leader.run())
            self._teardown.push("leader election", leader.stop)

        query = PrometheusQuery(s.prometheus.url, s.prometheus.query_timeout_s) if s.prometheus.url else None
        executor = RollbackExecutor(api_client, store, clock, s.kubernetes, metric_query=query, dry_run=dry_run)
        incidents = IncidentService(
            store,
            clock,
            list(s.approvers),
            executor,
            manual_rollback=lambda: rules.current.manual_rollback,
            is_leader=(lambda: leader.is_leader) if leader is not None else (lambda: True),
        )

        inbox = Inbox(store, clock)
        history = DeployHistoryStore(store)
        publisher: DecisionPublisher | None = None
        if s.kafka.enabled and s.kafka.decisions_topic:
            publisher = DecisionPublisher(s.kafka)
            await publisher.start()
            self._teardown.push("decision publisher", publisher.stop)
        pipeline = Pipeline(rules, history, incidents, clock, publisher)
        dispatcher = Dispatcher(inbox, pipeline, clock)

        notifiers: list[Any] = []
        if s.slack.enabled:
            notifiers.append(SlackNotifier.from_settings(s.slack))
        if s.pagerduty.enabled:
            notifiers.append(PagerDutyNotifier.from_settings(s.pagerduty))
        outbox = OutboxWorker(store, clock, notifiers)

        self.components.update(
            store=store, rules=rules, executor=executor, incidents=incidents, inbox=inbox, history=history,
            dispatcher=dispatcher, outbox=outbox, leader=leader, query=query, dry_run=dry_run,
        )

        await incidents.resume()
        self._spawn("dispatcher", dispatcher.run())
        self._teardown.push("dispatcher", dispatcher.stop)
        self._spawn("outbox", outbox.run())
        self._teardown.push("outbox", outbox.stop)
        self._spawn("timers", incidents.run_timers())
        if s.rules.watch and any(p.exists() for p in s.rules.paths):
            self._spawn("rule-watch", rules.watch(self.stop_event))

        if s.kafka.enabled:
            consumer = DeployConsumer(s.kafka, inbox, history, clock)
            await consumer.start()
            self._teardown.push("kafka consumer", consumer.stop)
            self.components["consumer"] = consumer
        if query is not None:
            poller = ThresholdPoller(
                query, lambda: rules.current.threshold_specs, inbox, clock, interval_s=s.prometheus.poll_interval_s
            )
            self._spawn("poller", poller.run())
            self._teardown.push("poller", poller.stop)

        await self._start_http(store, rules, incidents, inbox, outbox, leader, executor, dry_run)

    async def _start_http(self, store: Store, rules: RuleRegistry, incidents: IncidentService, inbox: Inbox,
                          outbox: OutboxWorker, leader: LeaderElector | None, executor: RollbackExecutor,
                          dry_run: bool) -> None:
        s = self.settings
        auth_required = s.http.auth_required
        if not s.http.tokens and auth_required:
            if not _is_loopback(s.http.host):
                raise ConfigError("http.tokens is empty: refusing to serve the API beyond loopback without tokens")
            log.warning("no API tokens configured: the API on loopback accepts unauthenticated calls")
            auth_required = False
        state = {
            "settings": s, "store": store, "clock": self.clock, "rules": rules, "incidents": incidents,
            "inbox": inbox, "outbox": outbox, "leader": leader, "executor": executor, "dry_run": dry_run,
            "auth": TokenAuth(list(s.http.tokens), required=auth_required),
        }
        app = build_app(state, max_body_bytes=s.http.max_body_bytes)
        config = uvicorn.Config(
            app, host=s.http.host, port=s.http.port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        self._server = server
        self._http_task = asyncio.create_task(server.serve(), name="http")
        self._http_task.add_done_callback(self._http_exited)
        self._teardown.push("http", self._stop_http)
        while not server.started:
            if self.stop_event.is_set():
                raise ConfigError(f"HTTP server could not start on {s.http.host}:{s.http.port}")
            await asyncio.sleep(0.02)
        log.info("listening", url=f"http://{s.http.host}:{self.port}", dry_run=dry_run)

    def _http_exited(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("HTTP server crashed", error=repr(task.exception()))
        if not self.stop_event.is_set():
            self.stop_event.set()

    async def _stop_http(self) -> None:
        """Stop accepting, let in-flight requests finish, close every connection."""
        if self._server is None or self._http_task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._http_task), timeout=10)
        except TimeoutError:
            self._server.force_exit = True
            await self._http_task

    async def stop(self) -> None:
        self.stop_event.set()
        await self._teardown.run(SHUTDOWN_BUDGET_S)

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_daemon(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the rules."""
    configure_logging(settings.logging.level, settings.logging.format)
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, daemon.stop_event.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stop_event.set)
    reload_requested = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    try:
        await daemon.start()
        while not daemon.stop_event.is_set():
            stop_wait = asyncio.ensure_future(daemon.stop_event.wait())
            reload_wait = asyncio.ensure_future(reload_requested.wait())
            await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reload_wait.cancel()
            if reload_requested.is_set():
                reload_requested.clear()
                result = daemon.components["rules"].reload()
                log.info("SIGHUP reload", ok=result.ok, errors=result.errors)
    finally:
        log.info("shutting down")
        await daemon.stop()
