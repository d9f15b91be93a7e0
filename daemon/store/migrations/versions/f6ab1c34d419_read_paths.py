"""indexes for the incident read paths

Revision ID: f6ab1c34d419
Revises: e5fa0b23c316
Create Date: 2026-12-01 22:40:00

Placeholder in the chain, filled in by the work that needs it: performance (issue 19).
"""

from __future__ import annotations


revision = 'f6ab1c34d419'
down_revision = 'e5fa0b23c316'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
