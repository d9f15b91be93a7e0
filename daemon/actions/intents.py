"""Rollback intents in the store: written before the patch, advanced after each step.

The intent (``rollback_intents``, keyed by the request's idempotency key) is
what makes a rollback crash-safe: ``planned`` is committed before any change
to the cluster, ``detail.patched`` and ``applied`` right after the undo, then
``ready``/``verified`` or ``failed``; ``interrupted`` marks a planned undo a
restart found not applied. Safety reads the same rows for the budget and the
loop breaker, so several replicas sharing PostgreSQL share them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from daemon.actions.safety import PastIntent
from daemon.model import Target
from daemon.store.db import Store
from daemon.store.tables import RollbackIntentRow
from daemon.target import WorkloadKind

OPEN_STATES = ("planned", "applied")


@dataclass(frozen=True, slots=True)
class Intent:
    """One persisted intent, as a plain value."""

    id: str
    incident_id: str | None
    target: Target
    state: str
    automatic: bool
    dry_run: bool
    from_revision: int | None
    to_revision: int | None
    created_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def patched(self) -> bool:
        return bool(self.detail.get("patched"))

    def past(self) -> PastIntent:
        return PastIntent(
            id=self.id,
            state=self.state,
            automatic=self.automatic,
            dry_run=self.dry_run,
            created_at=self.created_at,
            patched=self.patched,
            from_template_hash=str(self.detail.get("from_template_hash", "")),
            to_template_hash=str(self.detail.get("to_template_hash", "")),
        )


def _from_row(row: RollbackIntentRow) -> Intent:
    return Intent(
        id=row.id,
        incident_id=row.incident_id,
        target=Target(row.namespace, row.deployment, WorkloadKind(row.kind or WorkloadKind.DEPLOYMENT)),
        state=row.state,
        automatic=row.automatic,
        dry_run=row.dry_run,
        from_revision=row.from_revision,
        to_revision=row.to_revision,
        created_at=row.created_at,
        detail=dict(row.detail or {}),
    )


class IntentStore:
    """Reads and writes ``rollback_intents``; every write is its own committed transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, intent_id: str) -> Intent | None:
        async with self.store.transaction() as session:
            row = await session.get(RollbackIntentRow, intent_id)
            return _from_row(row) if row else None

    async def for_target(self, target: Target) -> list[Intent]:
        async with self.store.transaction() as session:
            rows = await session.scalars(
                select(RollbackIntentRow)
                .where(RollbackIntentRow.namespace == target.namespace)
                .where(RollbackIntentRow.deployment == target.name)
                .where(RollbackIntentRow.kind == target.kind.value)
                .order_by(RollbackIntentRow.created_at)
            )
            return [_from_row(r) for r in rows]

    async def open_intents(self) -> list[Intent]:
        async with self.store.transaction() as session:
            rows = await session.scalars(
                select(RollbackIntentRow)
                .where(RollbackIntentRow.state.in_(OPEN_STATES))
                .where(RollbackIntentRow.dry_run.is_(False))
                .order_by(RollbackIntentRow.created_at)
            )
            return [_from_row(r) for r in rows]

    async def plan(self, intent: Intent, now: datetime) -> None:
        """Create (or restart) the intent as ``planned``; committed before the caller patches anything."""
        async with self.store.transaction() as session:
            row = await session.get(RollbackIntentRow, intent.id)
            if row is None:
                row = RollbackIntentRow(id=intent.id, created_at=now)
                session.add(row)
            row.incident_id = intent.incident_id
            row.namespace = intent.target.namespace
            row.deployment = intent.target.name
            row.kind = intent.target.kind.value
            row.from_revision = intent.from_revision
            row.to_revision = intent.to_revision
            row.state = intent.state
            row.automatic = intent.automatic
            row.dry_run = intent.dry_run
            row.detail = dict(intent.detail)
            row.updated_at = now

    async def advance(self, intent_id: str, state: str, now: datetime, **detail: Any) -> None:
        """Move to ``state`` and merge ``detail`` into the record."""
        await self._merge(intent_id, state, now, detail)

    async def note(self, intent_id: str, now: datetime, **detail: Any) -> None:
        """Merge ``detail`` into the record, the state unchanged (the forced deletion's progress)."""
        await self._merge(intent_id, None, now, detail)

    async def _merge(self, intent_id: str, state: str | None, now: datetime, detail: dict[str, Any]) -> None:
        async with self.store.transaction() as session:
            row = await session.get(RollbackIntentRow, intent_id, with_for_update=True)
            if row is None:
                return
            if state is not None:
                row.state = state
            row.detail = {**(row.detail or {}), **detail}
            row.updated_at = now
