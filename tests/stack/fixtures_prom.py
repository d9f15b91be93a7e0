"""pytest plugin: Prometheus, Alertmanager, PostgreSQL and test helpers as fixtures.

Load it with ``-p tests.stack.fixtures_prom`` or ``pytest_plugins`` in a
conftest. The services are session-scoped: each starts once, in its own
``tmp_path_factory`` folder, and stops at the end of the session. A service
that cannot start makes the fixture raise ``StackError`` with the reason and
the tail of its log, so the tests that need it fail; they are never skipped.

Tests share the session's Prometheus and Alertmanager and reconfigure them
(``configure``); the ``prometheus`` fixture hands them over with the config a
previous test left, so each test sets everything it relies on. Use an alert
name of your own per test: state of an alert survives a rule reload, and
Alertmanager's notification log survives a config reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest

from tests.fakes.tls import TestCa
from tests.stack.exporter import Exporter
from tests.stack.postgres import Postgres
from tests.stack.prometheus import Alertmanager, Prometheus, SecuredPrometheus
from tests.stack.webhook_sink import WebhookSink


class _Service(Protocol):
    def start(self) -> dict[str, str]: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Service)


def _started(service: S) -> S:
    """Start ``service``; on failure stop what was started and raise (the fixture errors, no skip)."""
    try:
        service.start()
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A running Prometheus (no targets, no rules until a test configures them)."""
    service = _started(Prometheus(tmp_path_factory.mktemp("prometheus")))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def secured_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPrometheus]:
    """A second Prometheus requiring basic auth over TLS (``--web.config.file``); ``.ca`` signed its certificate."""
    workdir = tmp_path_factory.mktemp("prometheus-secured")
    service = _started(SecuredPrometheus(workdir, TestCa.create(workdir / "ca", "rollbackd-test-prometheus-ca")))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A running Alertmanager (a receiver that sends nowhere until a test configures a webhook)."""
    service = _started(Alertmanager(tmp_path_factory.mktemp("alertmanager")))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A running PostgreSQL with the database ``rollbackd``; ``postgres.dsn`` is the SQLAlchemy URL."""
    service = _started(Postgres(tmp_path_factory.mktemp("postgres")))
    yield service
    service.stop()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    """A fresh test exporter for one test; scrape it at ``exporter.address``."""
    service = Exporter().start()
    yield service
    service.stop()


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """A fresh recording HTTP receiver for one test, at ``webhook_sink.url``."""
    service = WebhookSink().start()
    yield service
    service.stop()
