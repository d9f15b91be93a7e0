"""The real PostgreSQL of the test stack, reached the way the daemon's store reaches it.

SQLAlchemy's async engine on the asyncpg driver, with the DSN the ``postgres``
fixture hands out: create a table, insert, select.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.stack.postgres import Postgres

pytestmark = pytest.mark.integration


async def test_create_insert_select(postgres: Postgres) -> None:
    assert postgres.dsn.startswith("postgresql+asyncpg://")
    engine = create_async_engine(postgres.dsn)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS stack_check"))
            await conn.execute(text("CREATE TABLE stack_check (id serial PRIMARY KEY, name text NOT NULL)"))
            await conn.execute(text("INSERT INTO stack_check (name) VALUES (:a), (:b)"), {"a": "web", "b": "api"})
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, name FROM stack_check ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [(1, "web"), (2, "api")]
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
            database = (await conn.execute(text("SELECT current_database()"))).scalar_one()
            fsync = (await conn.execute(text("SHOW fsync"))).scalar_one()
        print(f"\npostgres {version} at {postgres.dsn.split('@')[1]}")
        assert database == "rollbackd"
        assert fsync == "off"
    finally:
        await engine.dispose()


async def test_password_is_required(postgres: Postgres) -> None:
    bad = postgres.dsn.replace(f":{postgres.password}@", ":wrong@")
    engine = create_async_engine(bad)
    try:
        with pytest.raises(Exception, match="password authentication failed"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_new_database_is_empty_and_separate(postgres: Postgres) -> None:
    url = await postgres.new_database()
    assert url != postgres.dsn
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
            ).scalar_one()
        assert tables == 0
    finally:
        await engine.dispose()
