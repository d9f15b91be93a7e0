"""server-side sessions for the incident pages

Revision ID: c3d8e9f01a17
Revises: b7d2e41c9a05
Create Date: 2026-12-01 22:40:00

The incident pages (``daemon.web``) sign a responder in with a personal token
or through an authenticating proxy and keep a server-side session, so every
replica behind a load balancer knows it and a sign-out ends it everywhere. A
session is keyed by the SHA-256 of its cookie's secret (the table alone signs
no one in) and carries its user, how they signed in, and the times its idle
and absolute expiry are measured from; ``expires_at`` is indexed so expired
rows are swept cheaply.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = 'c3d8e9f01a17'
down_revision = 'b7d2e41c9a05'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'web_sessions',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('user_name', sa.String(length=255), nullable=False),
        sa.Column('via', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_web_sessions_expires_at', 'web_sessions', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_web_sessions_expires_at', table_name='web_sessions')
    op.drop_table('web_sessions')
