"""pauses, and one automated attempt per bad revision

Revision ID: d4e9fa12b215
Revises: c3d8e9f01a17
Create Date: 2026-12-01 22:40:00

Placeholder in the chain, filled in by the work that needs it: automation control (issue 15).
"""

from __future__ import annotations


revision = 'd4e9fa12b215'
down_revision = 'c3d8e9f01a17'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
