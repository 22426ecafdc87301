"""tenant_holds: a tenant's kill switch stays pulled for instances created after it

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reconciler.state import tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_holds",
        sa.Column("tenant", sa.String(253), primary_key=True),
        sa.Column("control", sa.String(16), nullable=False),
        sa.Column("operator", sa.String(253), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("held_at", tables.UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_holds")
