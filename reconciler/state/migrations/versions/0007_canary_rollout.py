"""deployments.rollout and deployments.canary_step: canary rollouts that step through weights

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: SQLite (3.35+) adds and drops these columns in place, while
# batch mode would copy and drop ``deployments``, which ``instances`` references (foreign keys on).


def upgrade() -> None:
    # Records made before this revision were all rolled out at once: NULL says exactly that.
    op.add_column("deployments", sa.Column("rollout", sa.String(length=16), nullable=True))
    op.add_column("deployments", sa.Column("canary_step", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_deployments_rollout"), "deployments", ["rollout"])


def downgrade() -> None:
    op.drop_index(op.f("ix_deployments_rollout"), table_name="deployments")
    op.drop_column("deployments", "canary_step")
    op.drop_column("deployments", "rollout")
