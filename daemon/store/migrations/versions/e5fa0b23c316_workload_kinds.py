"""targets of every workload kind

Revision ID: e5fa0b23c316
Revises: d4e9fa12b215
Create Date: 2026-12-01 22:40:00

Rollback intents and the deploy history name a workload of any kind
(Deployment, StatefulSet, DaemonSet): each row gains its kind, "deployment"
for every row written before (SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'e5fa0b23c316'
down_revision = 'd4e9fa12b215'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rollback_intents') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='deployment'))
    with op.batch_alter_table('deploy_history') as batch:
        batch.add_column(sa.Column('workload_kind', sa.String(length=16), nullable=False, server_default='deployment'))


def downgrade() -> None:
    with op.batch_alter_table('deploy_history') as batch:
        batch.drop_column('workload_kind')
    with op.batch_alter_table('rollback_intents') as batch:
        batch.drop_column('kind')
