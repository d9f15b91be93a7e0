"""The database engine, sessions and migrations for every stage.

One ``Store`` per process. SQLite (the embedded default) gets WAL mode and a
busy timeout so the API and the workers can share it; PostgreSQL gets a
bounded pool. Migrations run through alembic on the same connection, inside
the event loop, so start-up needs no second engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from daemon.errors import ConfigError
from daemon.metrics import STORE_ERRORS
from daemon.store.errors import StoreUnavailableError, translate

MIGRATIONS = Path(__file__).parent / "migrations"
# A readiness probe must answer within its own timeout, whatever the database does.
PING_TIMEOUT_S = 2.0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Re-raise database and driver errors as the store's own (``store.errors``), counted."""
    try:
        yield
    except BaseException as exc:
        mapped = translate(exc, what)
        if mapped is None:
            raise
        STORE_ERRORS.labels(reason=mapped.reason).inc()
        raise mapped from exc


class Store:
    """Owns the engine; hands out sessions; upgrades the schema."""

    def __init__(self, url: str, *, password: str | None = None, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types for a bad URL
            raise ConfigError(f"store.url is not a valid database URL: {exc}") from None
        if password is not None:
            parsed = parsed.set(password=password)
        self.url = parsed
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            # Bounded everywhere: a connect that hangs (a database restarting) must fail into the
            # caller's retry, not hold a worker; asyncpg's own connect timeout is 60 s.
            kwargs.update(
                pool_size=10, max_overflow=5, pool_pre_ping=True, pool_timeout=10,
                connect_args={"timeout": 5, "command_timeout": 30},
            )  # fmt: skip
        self.engine: AsyncEngine = create_async_engine(parsed, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer; a read-then-write transaction racing another writer fails with
        # SQLITE_BUSY instead of waiting, and writers that do wait meet in SQLite's busy handler,
        # which sleeps. So this process queues its own busy writers (the inbox, its claims, the
        # incidents) on one lock; PostgreSQL needs none.
        self.write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()
        )

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        return self.url.render_as_string(hide_password=True)

    @property
    def is_postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    @asynccontextmanager
    async def transaction(self, what: str = "store transaction") -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on error.

        Database and driver errors, at any statement or at the commit, leave as the
        errors of ``daemon.store.errors``; everything else passes unchanged.
        """
        with _mapped(what):
            async with self.sessions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def connect(self, what: str = "store connection") -> AsyncIterator[AsyncConnection]:
        """A Core connection in one transaction, with the same error mapping as ``transaction``."""
        with _mapped(what):
            async with self.engine.begin() as conn:
                yield conn

    async def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with alembic."""

        def run(sync_conn: Connection) -> None:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            try:
                row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
            except Exception:  # noqa: BLE001 - no table yet means no revision
                return None
            return str(row[0]) if row else None

    async def ping(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        """Raise ``StoreUnavailableError`` if the database cannot answer within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s), self.connect("store ping") as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError:
            raise StoreUnavailableError(f"store {self.safe_url} did not answer within {timeout_s:g} s") from None
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"store {self.safe_url} unreachable: {exc}") from None

    async def close(self) -> None:
        await self.engine.dispose()
