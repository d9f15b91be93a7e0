"""a rejection is recorded even from an approver who approved that role

Revision ID: b7d2e41c9a05
Revises: f5a67031f66b
Create Date: 2026-12-01 20:30:00

The approvals table allowed one row per (incident, approver, role), whatever
the verdict, so an approver who had approved for a role could not reject
afterwards: the rejection's row broke the constraint. Rejecting is the
fail-safe direction and must always be recorded. The constraint becomes a
partial unique index over approvals only: still one approval per approver and
role, never a second count.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = 'b7d2e41c9a05'
down_revision = 'f5a67031f66b'
branch_labels = None
depends_on = None

_INDEX = 'ux_approvals_one_approval'
_COLUMNS = ['incident_id', 'approver', 'role']
_APPROVALS_ONLY = "verdict = 'approve'"
# SQLite keeps the old constraint unnamed inside CREATE TABLE; this names it when the table is reflected.
_NAMED = {'uq': 'uq_%(table_name)s_%(column_0_N_name)s'}


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('approvals', recreate='always', naming_convention=_NAMED) as batch:
            batch.drop_constraint('uq_approvals_incident_id_approver_role', type_='unique')
    else:
        op.drop_constraint('approvals_incident_id_approver_role_key', 'approvals', type_='unique')
    op.create_index(
        _INDEX, 'approvals', _COLUMNS, unique=True,
        sqlite_where=sa.text(_APPROVALS_ONLY), postgresql_where=sa.text(_APPROVALS_ONLY),
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name='approvals')
    with op.batch_alter_table('approvals') as batch:
        batch.create_unique_constraint('approvals_incident_id_approver_role_key', _COLUMNS)
