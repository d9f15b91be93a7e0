"""Owns the daemon's lifecycle: builds every component, runs them, stops them in order.

Start-up: store (migrated) → rules → Kubernetes (dry-run, loudly, if no
cluster answers) → leader election → executor → incidents → inbox and
dispatcher → outbox (Slack, PagerDuty, Kafka publications) → Kafka consumer
and poller → HTTP server. Nothing waits for the Kafka broker: the consumer
joins its group and the publisher connects in the background. Signals only
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
from datetime import UTC
from functools import partial
from typing import Any

import uvicorn

from daemon.actions.client import KubeClient, connect
from daemon.actions.executor import RollbackExecutor
from daemon.actions.leader import LeaderElector
from daemon.api.app import build_app
from daemon.api.auth import TokenAuth
from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.errors import ConfigError, RollbackdError
from daemon.incidents.service import IncidentService
from daemon.ingest.claims import InboxClaims
from daemon.ingest.dispatcher import Dispatcher
from daemon.ingest.history import DeployHistoryStore
from daemon.ingest.inbox import Inbox
from daemon.logs import configure_logging, get_logger
from daemon.metrics import DECISION_LATENCY, IS_LEADER
from daemon.model import Target
from daemon.notify.no_data import notify_no_data
from daemon.notify.outbox import Notifier, OutboxWorker
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.slack import SlackNotifier
from daemon.pipeline import Pipeline
from daemon.rules import RuleRegistry
from daemon.sources.kafka import DeployConsumer
from daemon.sources.poller import ThresholdPoller
from daemon.sources.prometheus_query import PrometheusQuery
from daemon.sources.publisher import KafkaPublisher
from daemon.store.db import Store
from daemon.store.listen import INBOX_CHANNEL, Listener
from daemon.tasks import Teardown, cancel_all, guarded

log = get_logger(__name__)

SHUTDOWN_BUDGET_S = 25.0  # below Kubernetes' default 30 s termination grace period
RECOVERY_RETRY_S = 2.0


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
class Components:
    """What ``Daemon.start`` built; the API reaches the same objects through ``app.state``."""

    store: Store
    rules: RuleRegistry
    executor: RollbackExecutor
    incidents: IncidentService
    inbox: Inbox
    history: DeployHistoryStore
    dispatcher: Dispatcher
    outbox: OutboxWorker
    leader: LeaderElector | None
    query: PrometheusQuery | None
    dry_run: bool
    notify_channels: tuple[str, ...]

    def api_state(self, settings: Settings, clock: Clock, auth: TokenAuth) -> dict[str, Any]:
        return {
            "settings": settings, "clock": clock, "auth": auth, "store": self.store, "rules": self.rules,
            "incidents": self.incidents, "inbox": self.inbox, "outbox": self.outbox, "leader": self.leader,
            "executor": self.executor, "dry_run": self.dry_run,
        }  # fmt: skip


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
        """Build every component in dependency order, start the workers, then open the HTTP port."""
        self._teardown.push("background tasks", lambda: cancel_all(self._tasks))
        store = await self._open_store()
        rules = RuleRegistry(list(self.settings.rules.paths), self.clock)
        rules.load()
        log.info("rules loaded", rules=rules.current.rule_count, paths=[str(p) for p in self.settings.rules.paths])
        api_client, dry_run = await self._connect_kubernetes()
        leader = self._start_leader_election(api_client)
        self._components = c = await self._build(store, rules, api_client, leader, dry_run)
        if leader is None:
            await _recover(c)
        else:
            self._spawn("recover", _recover_when_leading(c, leader))
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

    async def _build(
        self, store: Store, rules: RuleRegistry, api_client: KubeClient | None, leader: LeaderElector | None,
        dry_run: bool,
    ) -> Components:  # fmt: skip
        s, clock = self.settings, self.clock
        query = PrometheusQuery(s.prometheus.url, s.prometheus.query_timeout_s) if s.prometheus.url else None
        executor = RollbackExecutor(
            api_client, store, clock, s.kubernetes, metric_query=query, dry_run=dry_run,
            fence=leader.fence() if leader is not None else None,
        )  # fmt: skip
        notifiers = self._notifiers()
        publisher = self._publisher()
        outbox = OutboxWorker(store, clock, [*notifiers, *([publisher] if publisher is not None else [])])
        incidents = IncidentService(
            store, clock, list(s.approvers), executor,
            manual_rollback=lambda: rules.current.manual_rollback,
            is_leader=(lambda: leader.is_leader) if leader is not None else (lambda: True),
            notify_channels=tuple(n.channel for n in notifiers),
            on_notify=outbox.wake,
            publish_as=s.instance if publisher is not None else None,
        )  # fmt: skip

        async def finish_rollbacks() -> None:
            # An in-flight rollback gets most of the budget to finish; what is cut off stays in
            # the intent log as applied-but-unverified and is reconciled at the next start.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(incidents.idle(), timeout=SHUTDOWN_BUDGET_S * 0.6)
            await incidents.close()

        self._teardown.push("incidents", finish_rollbacks)
        executor.progress = partial(_observe_patch, incidents, clock)
        if leader is None:
            IS_LEADER.set(1)  # a single replica always acts
        inbox = Inbox(store, clock)
        history = DeployHistoryStore(store)
        # Claims carry this replica's name: its next run releases what it left claimed at once.
        claims = InboxClaims(inbox, clock, holder=s.instance)
        dispatcher = Dispatcher(claims, Pipeline(rules, history, incidents), clock)
        return Components(
            store, rules, executor, incidents, inbox, history, dispatcher, outbox, leader, query, dry_run,
            tuple(n.channel for n in notifiers),
        )  # fmt: skip

    def _start_workers(self, c: Components) -> None:
        if c.leader is None:
            self._spawn("dispatcher", c.dispatcher.run())
        else:
            self._spawn("dispatcher", _dispatch_while_leading(c.dispatcher, c.leader))
        self._teardown.push("dispatcher", c.dispatcher.stop)
        self._spawn("outbox", c.outbox.run())
        if c.store.is_postgres:
            # Another replica's webhook commits reach this dispatcher within milliseconds, not a poll.
            self._spawn("store-listener", Listener(c.store, {INBOX_CHANNEL: c.dispatcher.wake}).run())
        self._teardown.push("outbox", c.outbox.stop)
        self._spawn("timers", c.incidents.run_timers())
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
        auth_required = s.http.auth_required
        if not s.http.tokens and auth_required:
            if not _is_loopback(s.http.host):
                raise ConfigError("http.tokens is empty: refusing to serve the API beyond loopback without tokens")
            log.warning("no API tokens configured: the API on loopback accepts unauthenticated calls")
            auth_required = False
        auth = TokenAuth(list(s.http.tokens), required=auth_required)
        app = build_app(c.api_state(s, self.clock, auth), max_body_bytes=s.http.max_body_bytes)
        config = uvicorn.Config(
            app, host=s.http.host, port=s.http.port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=5,
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


async def _observe_patch(incidents: IncidentService, clock: Clock, intent_id: str, _target: Target, step: str) -> None:
    """Decision latency: from the incident's opening (the alert's arrival) to the patch reaching the API server."""
    if step != "patched":
        return
    try:
        view = await incidents.get(intent_id.partition(":")[0])
    except Exception:  # noqa: BLE001 - a metric must never abort a rollback (listener errors do)
        return
    opened = view.opened_at if view.opened_at.tzinfo else view.opened_at.replace(tzinfo=UTC)
    DECISION_LATENCY.observe(max(0.0, (clock.now() - opened).total_seconds()))


async def _recover(c: Components) -> None:
    """After a restart: settle interrupted rollbacks from the cluster's state, then re-drive incidents.

    The executor's intent log says which undo was planned or applied; ``reconcile`` reads each
    Deployment and records what really happened, so re-driving an incident never undoes twice.
    """
    for result in await c.executor.reconcile():
        log.warning("reconciled interrupted rollback", intent=result.intent_id, detail=result.detail)
    await c.incidents.resume()


async def _recover_when_leading(c: Components, leader: LeaderElector) -> None:
    """Recover on every acquisition of the Lease, and stop the rollback drivers on every loss.

    Each new term may inherit intents another leader left open (it was paused, or partitioned),
    not only the first one after start-up. On a loss the drivers stop at once (client-go's
    OnStoppedLeading); their fence would refuse any write anyway, and the store keeps their state.
    """
    while True:
        await leader.elected.wait()
        while leader.is_leader:
            try:
                await _recover(c)
                break
            except RollbackdError as exc:  # the store or the apiserver is down: again while still leading
                log.warning("recovery failed, retrying", error=str(exc), reason=exc.reason)
                await asyncio.sleep(RECOVERY_RETRY_S)
        await leader.not_leading.wait()
        await c.incidents.close()


async def _dispatch_while_leading(dispatcher: Dispatcher, leader: LeaderElector) -> None:
    """Only the leader reads the inbox: two dispatchers on one database would handle the same rows.

    Standbys keep accepting webhooks into the shared inbox; the leader processes them.
    """
    while True:
        await leader.elected.wait()
        log.info("leading: processing the inbox")
        run = asyncio.create_task(dispatcher.run(), name="dispatcher")
        lost = asyncio.create_task(leader.not_leading.wait(), name="leadership-lost")
        try:
            # The elector drops leadership at the renew deadline, so this stops before the Lease expires.
            await asyncio.wait({run, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if run.done():
            run.result()  # a crash propagates to the guarded task
            return
        log.warning("leadership lost: no longer processing the inbox")
        await dispatcher.stop()
        await run


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
                result = await asyncio.to_thread(daemon.components.rules.reload)
                log.info("SIGHUP reload", ok=result.ok, errors=result.errors)
    finally:
        log.info("shutting down")
        await daemon.stop()
