"""Migration e5fa0b23c316: intents and deploy history written before kinds read as Deployments; it downgrades."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, bindparam, inspect, text

from daemon.actions.intents import IntentStore
from daemon.deploys import DeployKind
from daemon.ingest import DeployHistoryStore
from daemon.model import Target
from daemon.store.db import MIGRATIONS, Store
from daemon.store.tables import DeployRow, RollbackIntentRow
from daemon.target import WorkloadKind

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _to(revision: str, *, down: bool) -> Callable[[Connection], None]:
    def run(sync_conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = sync_conn
        (command.downgrade if down else command.upgrade)(cfg, revision)

    return run


def _columns(sync_conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(sync_conn).get_columns(table)}


async def test_rows_from_before_kinds_are_deployments_and_the_migration_downgrades(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.run_sync(_to("d4e9fa12b215", down=True))
        assert "kind" not in await conn.run_sync(_columns, "rollback_intents")
        assert "workload_kind" not in await conn.run_sync(_columns, "deploy_history")
        await conn.execute(text(
            "INSERT INTO rollback_intents (id, namespace, deployment, state, automatic, dry_run, detail,"
            " created_at, updated_at) VALUES ('old', 'prod', 'web', 'ready', true, false, '{}', :t, :t)"
        ).bindparams(bindparam("t", T0, type_=RollbackIntentRow.__table__.c.created_at.type)))  # fmt: skip
        await conn.execute(text(
            "INSERT INTO deploy_history (event_id, kind, service, namespace, deployment, image, version, \"commit\","
            " author, migration, at) VALUES ('e1', 'succeeded', 'web', 'prod', 'web', '', '', '', '', false, :t)"
        ).bindparams(bindparam("t", T0, type_=DeployRow.__table__.c.at.type)))  # fmt: skip
    await store.upgrade()

    [intent] = await IntentStore(store).for_target(Target("prod", "web"))
    assert (intent.id, intent.target) == ("old", Target("prod", "web"))
    assert await IntentStore(store).for_target(Target("prod", "web", WorkloadKind.STATEFULSET)) == []
    [event] = (await DeployHistoryStore(store).snapshot([Target("prod", "web")], None, T0)).events
    assert (event.event_id, event.kind, event.workload_kind) == ("e1", DeployKind.SUCCEEDED, WorkloadKind.DEPLOYMENT)
