"""Persistence for every stage: SQLAlchemy (async) over SQLite or PostgreSQL.

``tables`` declares the schema, ``db`` owns the engine, sessions and
migrations (alembic, in ``migrations/``). Stages keep their own queries in
their own modules; this package holds only what they share.
"""
