"""Owns the daemon's lifecycle: starts the components ``wiring`` built, runs them, stops them in order.

Start-up: store (migrated) → rules → Kubernetes (dry-run, loudly, if no
cluster answers) → leader election → notifiers → ``wiring.build_components``
→ workers: the leader's work (``leading``: recovery, dispatcher, rollback
drivers), the outbox, timers, the store listener → sources (Kafka consumer,
poller) → HTTP server. Nothing waits for the Kafka broker: the consumer joins
its group and the publisher connects in the background. Signals only set
events: SIGTERM/SIGINT stop, SIGHUP reloads the rules. Shutdown runs the
registered teardown steps last-first within one time budget: the HTTP server
and the sources stop first, then the workers (an in-flight rollback gets most
of the budget, what is cut off is reconciled at the next start from the intent
log), then leadership is released, background tasks are cancelled, and the
clients and the store close last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import uvicorn

from daemon.actions.client import KubeClient, connect
from daemon.actions.events import KubeEventNotifier
from daemon.actions.leader import LeaderElector
from daemon.api.app import build_app
from daemon.api.auth import TokenAuth, tokens_required
from daemon.api.state import ApiState
from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.control.pauses import CONTROL_CHANNEL
from daemon.errors import ConfigError
from daemon.leading import lead_always, lead_while_elected
from daemon.logs import configure_logging, get_logger
from daemon.metrics import IS_LEADER
from daemon.notify.automation import AutomationSlackNotifier
from daemon.notify.no_data import notify_no_data
from daemon.notify.outbox import Notifier
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.slack import SlackNotifier
from daemon.rules import RuleRegistry
from daemon.sources.kafka import DeployConsumer
from daemon.sources.poller import ThresholdPoller
from daemon.sources.publisher import KafkaPublisher
from daemon.store.db import Store
from daemon.store.listen import INBOX_CHANNEL, Listener
from daemon.tasks import Teardown, cancel_all, guarded
from daemon.wiring import Components, Io, build_components

log = get_logger(__name__)

SHUTDOWN_BUDGET_S = 25.0  # below Kubernetes' default 30 s termination grace period


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: signals belong to ``run_daemon``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Daemon:
    """Every component of one running rollbackd, reachable for tests and the API."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _components: Components | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _teardown: Teardown = field(default_factory=Teardown)
    _server: _Server | None = None
    _http_task: asyncio.Task[None] | None = None
    _sources: list[DeployConsumer] = field(default_factory=list)  # supervised sources, for /readyz
    _tokens_required: bool = True

    @property
    def components(self) -> Components:
        if self._components is None:
            raise RuntimeError("daemon not started")
        return self._components

    @property
    def port(self) -> int:
        """The HTTP port actually bound (useful with ``http.port: 0``)."""
        if self._server is None or not self._server.servers:
            raise RuntimeError("daemon not started")
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def _spawn(self, name: str, coro: Any) -> None:
        guarded(coro, name=name, stop=self.stop_event, tasks=self._tasks)

    async def start(self) -> None:
        """Open the store, build every component, start the workers and sources, then open the HTTP port."""
        # First: a configuration that would serve the API unauthenticated beyond loopback starts nothing.
        self._tokens_required = tokens_required(self.settings.http)
        store = await self._open_store()  # closed last
        rules = RuleRegistry(list(self.settings.rules.paths), self.clock)
        rules.load()
        log.info("rules loaded", rules=rules.current.rule_count, paths=[str(p) for p in self.settings.rules.paths])
        api_client, dry_run = await self._connect_kubernetes()
        notifiers = self._notifiers()
        publisher = self._publisher()
        # Cancelled after every worker stopped and before the clients and the store close.
        self._teardown.push("background tasks", lambda: cancel_all(self._tasks))
        leader = self._start_leader_election(api_client)
        channels = tuple(n.channel for n in notifiers)
        if self.settings.slack.enabled:  # pause and resume notices; not a channel incidents write to
            notifiers.append(AutomationSlackNotifier.from_settings(self.settings.slack))
        if api_client is not None:  # Kubernetes Events and annotations on the rolled-back targets
            timeout_s, name = self.settings.kubernetes.request_timeout_s, self.settings.instance
            notifiers.append(KubeEventNotifier(api_client, timeout_s, self.clock, instance=name))
        io = Io(
            store, self.clock, api_client, leader, dry_run,
            notifiers=[*notifiers, *([publisher] if publisher is not None else [])], notify_channels=channels,
            publish_as=self.settings.instance if publisher is not None else None,
        )  # fmt: skip
        self._components = c = build_components(self.settings, rules, io)
        if leader is None:
            IS_LEADER.set(1)  # a single replica always acts
        self._start_workers(c)
        await self._start_sources(c)
        await self._start_http(c)

    async def _open_store(self) -> Store:
        s = self.settings.store
        store = Store(s.url, password=s.password.read() if s.password else None)
        self._teardown.push("store", store.close)
        if s.auto_upgrade:
            await store.upgrade()
        log.info("store ready", url=store.safe_url)
        return store

    async def _connect_kubernetes(self) -> tuple[KubeClient | None, bool]:
        k = self.settings.kubernetes
        api_client = await connect(k)
        if api_client is not None:
            self._teardown.push("kubernetes client", api_client.close)
        dry_run = k.dry_run if k.dry_run is not None else api_client is None
        if api_client is None:
            log.warning(
                "NO KUBERNETES CLUSTER REACHABLE: every rollback is a DRY RUN until rollbackd restarts with one"
            )
        elif dry_run:
            log.warning("DRY-RUN MODE: rollbacks are validated by the API server but change nothing")
        return api_client, dry_run

    def _start_leader_election(self, api_client: KubeClient | None) -> LeaderElector | None:
        settings = self.settings.kubernetes.leader_election
        if not settings.enabled or api_client is None:
            return None
        leader = LeaderElector(api_client, settings, self.settings.instance)
        self._spawn("leader-election", leader.run())
        self._teardown.push("leader election", leader.stop)
        return leader

    def _notifiers(self) -> list[Notifier]:
        s = self.settings
        notifiers: list[Notifier] = []
        if s.slack.enabled:
            notifiers.append(SlackNotifier.from_settings(s.slack, public_url=s.http.public_url))
        if s.pagerduty.enabled:
            pagerduty = PagerDutyNotifier.from_settings(s.pagerduty, public_url=s.http.public_url, clock=self.clock)
            self._teardown.push("pagerduty client", pagerduty.close)
            notifiers.append(pagerduty)
        return notifiers

    def _publisher(self) -> KafkaPublisher | None:
        """The outbox's kafka channel, when decisions are published; its producer starts on first use."""
        k = self.settings.kafka
        if not (k.enabled and k.decisions_topic):
            return None
        publisher = KafkaPublisher(k, client_id=self.settings.instance, clock=self.clock)
        self._teardown.push("decision publisher", publisher.stop)  # LIFO: after the outbox has stopped
        return publisher

    def _start_workers(self, c: Components) -> None:
        """The leader's work, and what every replica runs: outbox, timers, the store listener, rule watching."""
        self._spawn("outbox", c.outbox.run())
        self._teardown.push("outbox", c.outbox.stop)
        self._teardown.push("incidents", partial(_finish_rollbacks, c))
        if c.leader is None:
            self._spawn("leader work", lead_always(c))
        else:
            self._spawn("leader work", lead_while_elected(c, c.leader))
        self._teardown.push("dispatcher", c.dispatcher.stop)
        self._spawn("timers", c.incidents.run_timers())
        if c.store.is_postgres:
            # Another replica's webhook commits reach this dispatcher within milliseconds, not a poll.
            callbacks = {INBOX_CHANNEL: c.dispatcher.wake, CONTROL_CHANNEL: c.pause_watcher.wake}
            self._spawn("store-listener", Listener(c.store, callbacks).run())
        self._spawn("pause-watcher", c.pause_watcher.run())  # every replica: /readyz, status, the gauge
        if self.settings.rules.watch and any(p.exists() for p in self.settings.rules.paths):
            self._spawn("rule-watch", c.rules.watch(self.stop_event))

    async def _start_sources(self, c: Components) -> None:
        s = self.settings
        if s.kafka.enabled:
            # Returns at once: the consumer joins its group in the background, so a broker that
            # is down delays deploy events, never the daemon's start.
            consumer = DeployConsumer(s.kafka, c.history, self.clock)
            await consumer.start()
            self._teardown.push("kafka consumer", consumer.stop)
            self._sources.append(consumer)
        if c.query is not None:
            poller = ThresholdPoller(
                c.query, lambda: c.rules.current.threshold_specs, c.inbox, self.clock,
                interval_s=s.prometheus.poll_interval_s,
                no_data_notify_after_s=s.prometheus.no_data_notify_after_s,
                on_no_data=partial(
                    notify_no_data, store=c.store, clock=self.clock, channels=c.notify_channels, wake=c.outbox.wake
                ),
            )  # fmt: skip
            self._spawn("poller", poller.run())
            self._teardown.push("poller", poller.stop)

    async def _start_http(self, c: Components) -> None:
        s = self.settings
        auth = TokenAuth(list(s.http.tokens), required=self._tokens_required, rate_limit=s.http.rate_limit)
        state = ApiState(
            s, self.clock, auth, c.store, c.rules, c.incidents, c.inbox, c.leader, c.dry_run,
            pauses=c.pauses, pause_watcher=c.pause_watcher, sources=tuple(self._sources),
        )  # fmt: skip
        app = build_app(state, max_body_bytes=s.http.max_body_bytes)
        # proxy_headers=False: the peer is the TCP peer. uvicorn would otherwise take X-Forwarded-For from any
        # loopback client, letting it pose as a trusted proxy of the incident pages (web.trusted_proxies decides).
        config = uvicorn.Config(
            app, host=s.http.host, port=s.http.port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=5, proxy_headers=False,
        )  # fmt: skip
        server = _Server(config)
        self._server = server
        self._http_task = asyncio.create_task(server.serve(), name="http")
        self._http_task.add_done_callback(self._http_exited)
        self._teardown.push("http", self._stop_http)
        while not server.started:
            if self._http_task.done():
                raise ConfigError(f"HTTP server could not start on {s.http.host}:{s.http.port}")
            await asyncio.sleep(0.02)
        log.info("listening", url=f"http://{s.http.host}:{self.port}", dry_run=c.dry_run)

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


async def _finish_rollbacks(c: Components) -> None:
    """An in-flight rollback gets most of the budget to finish; what is cut off stays in the intent
    log as applied-but-unverified and is reconciled at the next start."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(c.incidents.idle(), timeout=SHUTDOWN_BUDGET_S * 0.6)
    await c.incidents.close()


def _tune_gc() -> None:
    """Keep the cyclic collector off the hot paths once the daemon is up.

    Start-up's objects (imports, rules, the app) live as long as the process: frozen, no full
    collection walks them again. A page of 1,000 incidents or a batch of alerts allocates hundreds
    of thousands of short-lived objects; with the default young threshold (700) each such burst ran
    many full collections, which took most of the list's time (its profile: to_json 5x slower).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


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
        _tune_gc()
        while not daemon.stop_event.is_set():
            stop_wait = asyncio.ensure_future(daemon.stop_event.wait())
            reload_wait = asyncio.ensure_future(reload_requested.wait())
            await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reload_wait.cancel()
            if reload_requested.is_set():
                reload_requested.clear()
                result = await asyncio.to_thread(daemon.components.rules.reload)
                log.info("SIGHUP reload", ok=result.ok, errors=result.errors)
    finally:
        log.info("shutting down")
        await daemon.stop()
