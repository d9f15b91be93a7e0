"""no schema change for the incident read paths

Revision ID: f6ab1c34d419
Revises: e5fa0b23c316
Create Date: 2026-12-01 22:40:00

The set-based incident list (``incidents.read.build_records``) was measured
for a new index and needs none: its queries select by ``incident_id``, which
the existing indexes serve. The revision stays empty rather than leaving the
chain, since databases may already be stamped with it.
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
