"""fleet_state.policy_digest: the Rego the applied commit was planned with

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fleet_state") as batch:
        batch.add_column(sa.Column("policy_digest", sa.String(length=71), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fleet_state") as batch:
        batch.drop_column("policy_digest")
