"""evidence: signing keys' public halves, signed chain checkpoints, op-event archives

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reconciler.state import tables

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "chain_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(253), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("head", sa.String(71), nullable=False),
        sa.Column("at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("previous", sa.String(71), nullable=False),
        sa.Column("archives", tables.JSON, nullable=False),
        sa.Column("pruned", tables.JSON, nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("hash", sa.String(71), nullable=False),
        sa.UniqueConstraint("tenant", "number", name="uq_chain_checkpoints_tenant_number"),
    )
    op.create_table(
        "op_event_archives",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(253), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("first_id", sa.BigInteger, nullable=False),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("first_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("keep_until", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("listed_in", sa.Integer, nullable=True),
        sa.Column("pruned_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pruned_in", sa.Integer, nullable=True),
        sa.UniqueConstraint("name", name="uq_op_event_archives_name"),
    )
    op.create_index("ix_op_event_archives_tenant_last_at", "op_event_archives", ["tenant", "last_at"])


def downgrade() -> None:
    op.drop_index("ix_op_event_archives_tenant_last_at", "op_event_archives")
    op.drop_table("op_event_archives")
    op.drop_table("chain_checkpoints")
    op.drop_table("signing_keys")
