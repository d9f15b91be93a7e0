"""alembic environment: runs on the connection ``Store.upgrade`` hands it.

``alembic`` on the command line is not used; ``rollbackd db upgrade`` and the
automatic upgrade at start both go through ``Store.upgrade``.
"""

from __future__ import annotations

from alembic import context

from daemon.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `rollbackd db upgrade`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
