"""What the HTTP surface may reach: one typed value instead of a service locator on ``app.state``.

Part of the api stage. ``app.py`` (the lifecycle) builds the components and
hands the API exactly this; every router reads it through ``state_of``. A
route that needs something new adds a field here, so the API's dependencies
are listed in one place and checked by the type checker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fastapi import Request

from daemon.clock import Clock
from daemon.config import Settings
from daemon.control.pauses import Pauses, PauseWatcher
from daemon.incidents.service import IncidentService
from daemon.ingest.inbox import Inbox
from daemon.rules import RuleRegistry
from daemon.sources.supervised import SourceHealth
from daemon.store.db import Store

if TYPE_CHECKING:  # auth reads its TokenAuth through state_of: a runtime import would be a cycle
    from daemon.api.auth import TokenAuth


class Leadership(Protocol):
    """What ``/readyz`` asks of leader election (``actions.leader.LeaderElector``)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def known(self) -> bool: ...


class SourceStatus(Protocol):
    """What ``/readyz`` asks of a supervised source (``sources.kafka.DeployConsumer``)."""

    def health(self) -> SourceHealth: ...


@dataclass(frozen=True, slots=True)
class ApiState:
    """Everything a route may use; built once per daemon."""

    settings: Settings
    clock: Clock
    auth: TokenAuth
    store: Store
    rules: RuleRegistry
    incidents: IncidentService
    inbox: Inbox
    leader: Leadership | None
    dry_run: bool
    pauses: Pauses | None = None  # None: built on the store when asked (tests that build a bare app)
    pause_watcher: PauseWatcher | None = None  # this replica's view of the pauses, for /readyz
    sources: tuple[SourceStatus, ...] = ()  # supervised sources (the Kafka consumer), for /readyz


def state_of(request: Request) -> ApiState:
    """The daemon's ``ApiState`` for this request."""
    state: ApiState = request.app.state.api
    return state
