"""inbox claims and one open incident per group

Revision ID: f5a67031f66b
Revises: 321219cc93d4
Create Date: 2026-12-01 19:50:00

Two replicas on one PostgreSQL need the database to decide what two writers
may not both do: the inbox gets a per-row dispatcher lease (claimed_by,
claimed_until), and incidents a partial unique index so a group has at most
one open incident. A database that already holds several open incidents for
one group (possible before this index) keeps them all open and visible: every
one but the oldest gets its id appended to its group key, so the index can be
built without closing anything a responder may be looking at.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = 'f5a67031f66b'
down_revision = '321219cc93d4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbox') as batch:
        batch.add_column(sa.Column('claimed_by', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True))
    incidents = sa.table(
        'incidents', sa.column('id', sa.String), sa.column('group_key', sa.String),
        sa.column('open', sa.Boolean), sa.column('created_at', sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(incidents.c.id, incidents.c.group_key)
        .where(incidents.c.open.is_(True))
        .order_by(incidents.c.group_key, incidents.c.created_at, incidents.c.id)
    ).all()
    seen: set[str] = set()
    for incident_id, group_key in rows:
        if group_key in seen:
            conn.execute(
                incidents.update().where(incidents.c.id == incident_id)
                .values(group_key=f"{group_key}#{incident_id}")
            )
        seen.add(group_key)
    op.create_index(
        'ux_incidents_open_group', 'incidents', ['group_key'], unique=True,
        sqlite_where=sa.text('open = 1'), postgresql_where=sa.text('open'),
    )


def downgrade() -> None:
    op.drop_index('ux_incidents_open_group', table_name='incidents')
    with op.batch_alter_table('inbox') as batch:
        batch.drop_column('claimed_until')
        batch.drop_column('claimed_by')
