"""Autogenerate an alembic revision from ``daemon/store/tables.py``.

Usage: python scripts/dev/make-migration.py "message"
Diffs the tables against a scratch SQLite database upgraded to head.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from daemon.store.db import MIGRATIONS, Store


async def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite+aiosqlite:///{Path(tmp) / 'scratch.sqlite'}")
        await store.upgrade()

        def revise(conn: Connection) -> None:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=message, autogenerate=True)

        async with store.engine.begin() as conn:
            await conn.run_sync(revise)
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "schema change"))
