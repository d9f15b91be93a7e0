"""Where an incident's message lives in a channel, so a retry updates instead of posting twice.

A notifier that needs to remember something per incident (Slack's message
``ts`` and the ``ts`` of each thread reply) implements ``UsesRefs``; the
outbox worker binds it to ``StoreRefs`` over ``NotificationRefRow``. Tests
of a notifier alone bind ``MemoryRefs``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from daemon.store.db import Store
from daemon.store.tables import NotificationRefRow


class Refs(Protocol):
    async def get(self, incident_id: str, channel: str) -> dict[str, Any] | None: ...

    async def put(self, incident_id: str, channel: str, ref: dict[str, Any]) -> None: ...


@runtime_checkable
class UsesRefs(Protocol):
    """A notifier that keeps per-incident references; the worker calls ``bind_refs`` once."""

    def bind_refs(self, refs: Refs) -> None: ...


class StoreRefs:
    """References persisted in ``notification_refs``: they survive a restart."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, incident_id: str, channel: str) -> dict[str, Any] | None:
        async with self._store.transaction() as session:
            row = await session.get(NotificationRefRow, (incident_id, channel))
            return dict(row.ref) if row is not None else None

    async def put(self, incident_id: str, channel: str, ref: dict[str, Any]) -> None:
        async with self._store.transaction() as session:
            row = await session.get(NotificationRefRow, (incident_id, channel))
            if row is None:
                session.add(NotificationRefRow(incident_id=incident_id, channel=channel, ref=dict(ref)))
            else:
                row.ref = dict(ref)  # a new dict, so SQLAlchemy sees the JSON change


class MemoryRefs:
    """References in a dict: for a notifier used without a store."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, Any]] = {}

    async def get(self, incident_id: str, channel: str) -> dict[str, Any] | None:
        ref = self.data.get((incident_id, channel))
        return dict(ref) if ref is not None else None

    async def put(self, incident_id: str, channel: str, ref: dict[str, Any]) -> None:
        self.data[(incident_id, channel)] = dict(ref)
