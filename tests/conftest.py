"""Fixtures shared by every test: fake time, a migrated store, the real-service stack.

The stack fixtures (kafka, kube, prometheus, alertmanager, postgres) live in
``tests/stack/fixtures_*.py`` and start the real services once per session.
``store`` runs on SQLite by default; ``--store=postgres`` runs the same tests
against the real PostgreSQL of the stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.clock import FakeClock
from daemon.logs import configure_logging
from daemon.store.db import Store

pytest_plugins = [
    "tests.stack.fixtures_kafka",
    "tests.stack.fixtures_kube",
    "tests.stack.fixtures_prom",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store", default="sqlite", choices=["sqlite", "postgres", "both"], help="store backend(s)")
    parser.addoption("--soak", action="store_true", help="run the soak tests too")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" in metafunc.fixturenames:
        choice = metafunc.config.getoption("--store")
        backends = ["sqlite", "postgres"] if choice == "both" else [choice]
        metafunc.parametrize("store_backend", backends, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(pytest.mark.skip(reason="soak runs only with --soak"))


@pytest.fixture(autouse=True, scope="session")
def _daemon_logs_on_stderr() -> None:
    """Log as the daemon does, to stderr: a CLI test's stdout (a JSON report) must hold only the report.

    Loggers are not cached, so ``structlog.testing.capture_logs`` still sees every event.
    """
    configure_logging("debug", "console", cache=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path, store_backend: str) -> AsyncIterator[Store]:
    """A freshly migrated store: SQLite in a temp dir, or a new database on the stack's PostgreSQL."""
    if store_backend == "postgres":
        pg = request.getfixturevalue("postgres")
        url = await pg.new_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'rollbackd.sqlite'}"
    s = Store(url)
    await s.upgrade()
    yield s
    await s.close()


@pytest.fixture
async def pg_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A freshly migrated store on the stack's PostgreSQL, for what only several writers can show."""
    pg = request.getfixturevalue("postgres")
    s = Store(await pg.new_database())
    await s.upgrade()
    yield s
    await s.close()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after its fixtures are torn down."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t not in before and t is not me and not t.done()]
    for t in leaked:
        t.cancel()
    if leaked:
        names = ", ".join(t.get_name() for t in leaked[:5])
        pytest.fail(f"{request.node.nodeid} left {len(leaked)} asyncio task(s) running: {names}")
