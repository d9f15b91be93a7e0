"""automation control: pauses and held automated rollbacks

Revision ID: d4e9fa12b215
Revises: c3d8e9f01a17
Create Date: 2026-12-01 22:40:00

``automation_pauses`` holds the kill switch (``control.pauses``): each pause's
scope, reason, author and end, and who resumed it. ``automation_holds`` records
every automated rollback a guard held (a pause, a freeze window, a shadow rule,
one attempt per bad revision), which the shadow report reads back. Both are new
tables: nothing existing changes, and the downgrade drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = 'd4e9fa12b215'
down_revision = 'c3d8e9f01a17'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('automation_pauses',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resumed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resumed_by', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_automation_pauses_active', 'automation_pauses', ['resumed_at', 'until'], unique=False)
    op.create_table('automation_holds',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('incident_id', sa.String(length=32), nullable=False),
    sa.Column('rule', sa.String(length=255), nullable=False),
    sa.Column('guard', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('would', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_automation_holds_guard_at', 'automation_holds', ['guard', 'at'], unique=False)
    op.create_index(op.f('ix_automation_holds_incident_id'), 'automation_holds', ['incident_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_automation_holds_incident_id'), table_name='automation_holds')
    op.drop_index('ix_automation_holds_guard_at', table_name='automation_holds')
    op.drop_table('automation_holds')
    op.drop_index('ix_automation_pauses_active', table_name='automation_pauses')
    op.drop_table('automation_pauses')
