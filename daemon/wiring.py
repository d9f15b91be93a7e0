"""Builds the pipeline's components from settings: pure construction, nothing started, nothing stopped.

The daemon (``app.py``, the lifecycle) and ``rollbackd replay`` both build
their components here, so a replay drives exactly the code production runs —
inbox, dispatcher, pipeline, incident service, timers, executor — with only the
I/O swapped: the store, the clock, the cluster client (None: every rollback a
dry run), leader election and the notifiers are handed in. Every component
gets all it needs in its constructor; nothing is patched in afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.actions.client import KubeClient
from daemon.actions.executor import RollbackExecutor
from daemon.actions.leader import LeaderElector
from daemon.clock import Clock
from daemon.config import Settings
from daemon.control.guard import AutomationGuard, freeze_check
from daemon.control.pauses import Pauses, PauseWatcher
from daemon.incidents.kube_events import CHANNEL as KUBE_EVENTS
from daemon.incidents.service import IncidentService
from daemon.ingest.claims import InboxClaims
from daemon.ingest.dispatcher import Dispatcher
from daemon.ingest.history import DeployHistoryStore
from daemon.ingest.inbox import Inbox
from daemon.notify.outbox import Notifier, OutboxWorker
from daemon.pipeline import Pipeline
from daemon.rules import RuleRegistry
from daemon.sources.prometheus_query import PrometheusQuery
from daemon.store.db import Store


@dataclass(frozen=True, slots=True)
class Components:
    """One rollbackd's working parts, wired to each other."""

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
    pauses: Pauses
    pause_watcher: PauseWatcher


@dataclass(frozen=True, slots=True)
class Io:
    """What differs between the daemon and a replay: where the pipeline reads and writes."""

    store: Store
    clock: Clock
    api_client: KubeClient | None  # None: no cluster, every rollback a dry run
    leader: LeaderElector | None  # None: this process always leads
    dry_run: bool
    notifiers: Sequence[Notifier]  # delivery channels the outbox worker serves
    notify_channels: tuple[str, ...]  # channels incidents write notifications for
    publish_as: str | None = None  # the instance name on Kafka publications, when a kafka channel exists


def build_components(settings: Settings, rules: RuleRegistry, io: Io) -> Components:
    """The executor, incidents, inbox, dispatcher and outbox for ``settings`` over ``io``."""
    s, clock, store, leader = settings, io.clock, io.store, io.leader
    # One client for the poller and for verification queries: auth, headers and TLS built in one place.
    query = PrometheusQuery.from_settings(s.prometheus) if s.prometheus.url else None
    executor = RollbackExecutor(
        io.api_client, store, clock, s.kubernetes, metric_query=query, dry_run=io.dry_run,
        fence=leader.fence() if leader is not None else None,
    )  # fmt: skip
    outbox = OutboxWorker(store, clock, io.notifiers)
    pauses = Pauses(store, clock, channels=[n.channel for n in io.notifiers])
    watcher = PauseWatcher(pauses)
    pauses.changed = watcher.wake  # the replica that took the pause shows it at once, NOTIFY or not
    incidents = IncidentService(
        store, clock, list(s.approvers), executor,
        manual_rollback=lambda: rules.current.manual_rollback,
        manual_forced_after=lambda: (m.forced_rollback_after_s if (m := rules.current.manual_rollback_spec) else None),
        is_leader=(lambda: leader.is_leader) if leader is not None else (lambda: True),
        notify_channels=io.notify_channels,
        on_notify=outbox.wake,
        publish_as=io.publish_as,
        kube_events=any(n.channel == KUBE_EVENTS for n in io.notifiers),
        guard=AutomationGuard(
            store, clock, pauses, watcher=watcher, freeze=freeze_check(lambda: rules.current.freeze_windows)
        ),
    )  # fmt: skip
    inbox = Inbox(store, clock)
    history = DeployHistoryStore(store)
    # Claims carry this replica's name: its next run releases what it left claimed at once.
    claims = InboxClaims(inbox, clock, holder=s.instance)
    shadow = frozenset(s.control.shadow_namespaces)
    pipeline = Pipeline(rules, history, incidents, shadow_namespaces=shadow, clock=clock)
    dispatcher = Dispatcher(claims, pipeline, clock)
    return Components(
        store, rules, executor, incidents, inbox, history, dispatcher, outbox, leader, query, io.dry_run,
        io.notify_channels, pauses, watcher,
    )  # fmt: skip
