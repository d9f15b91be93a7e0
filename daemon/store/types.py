"""Column types of the store: times are aware UTC on the way in and on the way out.

Part of ``daemon.store``, used by every table through ``tables.Base``'s
``type_annotation_map``. PostgreSQL's ``timestamptz`` keeps the instant but
SQLite has no time zone type: it stores the wall time it was given and hands it
back naive. Without this type every repository had to guess what a naive value
meant; with it, a row's time is always an aware UTC ``datetime`` on both
databases, and a naive one is refused before it is written, because it names
no instant.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that binds UTC and returns aware UTC; the database type is unchanged."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} names no instant; pass an aware one")
        # SQLite keeps the wall time as given: UTC, so stored times compare and sort as instants.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite returns what process_bind_param wrote, without its offset: that is UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
