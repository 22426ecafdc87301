"""approvals: escalation columns and an index for the expiry sweep

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import reconciler.state.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("escalate_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("escalate_to", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True)
        )
        batch.add_column(sa.Column("escalated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_approvals_status_expires_at"), "approvals", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_approvals_status_expires_at"), table_name="approvals")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("escalated_at")
        batch.drop_column("escalate_to")
        batch.drop_column("escalate_at")
