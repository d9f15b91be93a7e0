"""server-side sessions for the incident pages

Revision ID: c3d8e9f01a17
Revises: b7d2e41c9a05
Create Date: 2026-12-01 22:40:00

Placeholder in the chain, filled in by the work that needs it: the incident pages (issue 17).
"""

from __future__ import annotations


revision = 'c3d8e9f01a17'
down_revision = 'b7d2e41c9a05'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
