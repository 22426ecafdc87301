"""op_events: decisions go into the time index only; COST events keep an index of their own

Every index led by the instance put each stored decision on another page, rewritten to the WAL
on every group commit: with three of them a decision cost ~60 µs to store instead of ~10. The
ledger answers budgets and loops from memory, and reads windows of decisions by time; COST
events, few by comparison, keep their (tenant, instance, at) index as a partial one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COST = sa.text("type = 'COST'")


def upgrade() -> None:
    op.drop_index(op.f("ix_op_events_instance_type_at"), table_name="op_events")
    op.drop_index(op.f("ix_op_events_instance_call_key_at"), table_name="op_events")
    op.drop_index(op.f("ix_op_events_tenant_instance_at"), table_name="op_events")
    op.create_index(
        "ix_op_events_cost_tenant_instance_at",
        "op_events",
        ["tenant", "instance", "at"],
        sqlite_where=_COST,
        postgresql_where=_COST,
    )


def downgrade() -> None:
    op.drop_index("ix_op_events_cost_tenant_instance_at", table_name="op_events")
    op.create_index(op.f("ix_op_events_tenant_instance_at"), "op_events", ["tenant", "instance", "at"])
    op.create_index(op.f("ix_op_events_instance_call_key_at"), "op_events", ["instance", "call_key", "at"])
    op.create_index(op.f("ix_op_events_instance_type_at"), "op_events", ["instance", "type", "at"])
