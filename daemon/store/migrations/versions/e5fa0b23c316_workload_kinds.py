"""targets of every workload kind

Revision ID: e5fa0b23c316
Revises: d4e9fa12b215
Create Date: 2026-12-01 22:40:00

Placeholder in the chain, filled in by the work that needs it: StatefulSet and DaemonSet targets (issue 16).
"""

from __future__ import annotations


revision = 'e5fa0b23c316'
down_revision = 'd4e9fa12b215'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
