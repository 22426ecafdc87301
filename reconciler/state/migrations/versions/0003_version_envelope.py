"""agent_versions.envelope: each version's effective policy envelope, computed at apply

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("agent_versions") as batch:
        batch.add_column(sa.Column("envelope", JSON, nullable=True))
        batch.add_column(sa.Column("envelope_digest", sa.String(length=71), nullable=True))
    # Envelopes are derived from the applied commit: make the next apply of it plan again.
    op.execute("UPDATE fleet_state SET generation = generation + 1")


def downgrade() -> None:
    with op.batch_alter_table("agent_versions") as batch:
        batch.drop_column("envelope_digest")
        batch.drop_column("envelope")
