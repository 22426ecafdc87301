"""policy_modules: the fleet Rego of the applied commit, so decisions need no Git access

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 01:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_modules",
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_policy_modules")),
    )
    # The next apply stores the applied commit's modules (it writes them when the digest changes).
    op.execute("UPDATE fleet_state SET generation = generation + 1, policy_digest = NULL")


def downgrade() -> None:
    op.drop_table("policy_modules")
