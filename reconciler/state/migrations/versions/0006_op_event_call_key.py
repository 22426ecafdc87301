"""op_events.call_key: loop detection counts repeated calls in an index instead of payloads;
budgets read an instance's COST events through an index of their own

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 02:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("op_events") as batch:
        batch.add_column(sa.Column("call_key", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_op_events_instance_call_key_at"), "op_events", ["instance", "call_key", "at"])
    op.create_index(op.f("ix_op_events_instance_type_at"), "op_events", ["instance", "type", "at"])
    # Decisions stored before this revision count too (their key is in the payload).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE op_events SET call_key = payload->>'callKey' WHERE type = 'DECISION'")
    else:
        op.execute("UPDATE op_events SET call_key = json_extract(payload, '$.callKey') WHERE type = 'DECISION'")


def downgrade() -> None:
    op.drop_index(op.f("ix_op_events_instance_type_at"), table_name="op_events")
    op.drop_index(op.f("ix_op_events_instance_call_key_at"), table_name="op_events")
    with op.batch_alter_table("op_events") as batch:
        batch.drop_column("call_key")
