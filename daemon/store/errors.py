"""The store's error boundary: database and driver errors become rollbackd errors, once, here.

Every stage reaches the database through ``Store.transaction`` (or
``Store.connect``), and both pass what the driver raised through
``translate``. Callers therefore see only three kinds of failure:

* ``StoreUnavailableError`` (a ``TemporaryError``, reason ``store``): the
  database cannot answer now — refused or reset connections, a restart in
  progress, a pool timeout, a serialization conflict. Workers retry with
  backoff; the webhooks answer 503 with ``Retry-After``.
* ``ConstraintError`` (permanent, reason ``constraint``): the write broke a
  named constraint. ``constraint`` is the index or constraint name from
  ``tables.py`` on both SQLite and PostgreSQL, so a caller can tell "another
  writer opened this incident first" from a bug.
* ``StoreBugError`` (permanent, reason ``store_bug``): the statement itself is
  wrong (syntax, type, missing table); retrying cannot help.

No driver exception crosses this boundary, so no worker dies of a
``ConnectionResetError`` and no handler calls a constraint violation a
concurrent update unless it is one.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache

from sqlalchemy import Index, UniqueConstraint
from sqlalchemy import exc as sa_exc

from daemon.errors import PermanentError, RollbackdError, TemporaryError
from daemon.store.tables import Base

# SQLite names the columns, not the index: "UNIQUE constraint failed: incidents.group_key".
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '(?P<index>[^']+)'|(?P<columns>[\w., ]+))")
_RETRY_HINT_S = 1.0


class StoreUnavailableError(TemporaryError):
    """The database cannot answer right now; trying again later may succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="store", delay=_RETRY_HINT_S)


class ConstraintError(PermanentError):
    """A write broke ``constraint`` (its name in ``tables.py``, or the columns when it has none)."""

    def __init__(self, constraint: str, message: str) -> None:
        super().__init__(message, reason="constraint")
        self.constraint = constraint


class StoreBugError(PermanentError):
    """The statement is wrong for the schema; a retry gives the same answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="store_bug")


@cache
def _unique_names() -> dict[str, str]:
    """``"table.col1, table.col2"`` → constraint name, for every unique constraint and index in the schema."""
    names: dict[str, str] = {}
    for table in Base.metadata.tables.values():
        uniques: list[UniqueConstraint | Index] = [c for c in table.constraints if isinstance(c, UniqueConstraint)]
        uniques += [i for i in table.indexes if i.unique]
        for item in uniques:
            columns = [c.name for c in item.columns]
            # Unnamed: the name PostgreSQL gives it, so both backends report the same one.
            name = item.name if isinstance(item.name, str) else f"{table.name}_{'_'.join(columns)}_key"
            names[", ".join(f"{table.name}.{c}" for c in columns)] = name
        if table.primary_key is not None:
            key = ", ".join(f"{table.name}.{c.name}" for c in table.primary_key.columns)
            names.setdefault(key, f"{table.name}_pkey")
        for column in table.columns:
            if column.unique:
                names.setdefault(f"{table.name}.{column.name}", f"{table.name}_{column.name}_key")
    return names


def _constraint_name(exc: sa_exc.IntegrityError) -> str:
    """The violated constraint's name as ``tables.py`` spells it, from either driver."""
    cause = exc.orig.__cause__ if exc.orig is not None else None
    name = getattr(cause, "constraint_name", None)  # asyncpg's exception carries it
    if name:
        return str(name)
    found = _SQLITE_UNIQUE.search(str(exc.orig))
    if found is None:
        return "unknown"
    if found["index"]:
        return found["index"]
    columns = found["columns"].strip()
    return _unique_names().get(columns, columns)


def _driver_name(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    inner = orig.__cause__ if orig is not None and orig.__cause__ is not None else orig
    return type(inner if inner is not None else exc).__name__


def _is_bug(exc: sa_exc.StatementError) -> bool:
    """A statement that fails however often it is retried."""
    if not isinstance(exc, sa_exc.DBAPIError):
        # Raised while preparing it (a bind value its column type refuses, such as a naive
        # datetime): the database never saw it.
        return True
    wrong_statement = sa_exc.ProgrammingError | sa_exc.DataError | sa_exc.NotSupportedError
    return isinstance(exc, wrong_statement) and not exc.connection_invalidated


def translate(exc: BaseException, what: str) -> RollbackdError | None:
    """The rollbackd error for a failure inside the store, or None when it is not the store's to map."""
    if isinstance(exc, RollbackdError | asyncio.CancelledError | GeneratorExit | KeyboardInterrupt | SystemExit):
        return None
    if isinstance(exc, sa_exc.IntegrityError):
        name = _constraint_name(exc)
        return ConstraintError(name, f"{what}: constraint {name} violated")
    if isinstance(exc, sa_exc.StatementError) and _is_bug(exc):
        return StoreBugError(f"{what}: {_driver_name(exc)}: {exc.orig}")
    if isinstance(exc, sa_exc.SQLAlchemyError | OSError | TimeoutError | ConnectionError):
        # Connection refused or reset, "the database system is shutting down", pool timeouts,
        # serialization failures: all of them pass, so the caller retries.
        return StoreUnavailableError(f"{what}: database unavailable ({_driver_name(exc)})")
    if type(exc).__module__.startswith("asyncpg"):
        return StoreUnavailableError(f"{what}: database unavailable ({type(exc).__name__})")
    return None
