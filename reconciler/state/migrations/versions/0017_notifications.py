"""notifications: NotificationChannel manifests and the notification outbox

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reconciler.state import tables

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("labels", tables.JSON, nullable=False),
        sa.Column("spec", tables.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(1024), nullable=False),
        sa.Column("created_sha", sa.String(40), nullable=False),
        sa.Column("updated_sha", sa.String(40), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_notification_channels_tenant_name")),
    )
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(253), nullable=False),
        sa.Column("channel", sa.String(253), nullable=False),
        sa.Column("event", sa.String(48), nullable=False),
        sa.Column("object_kind", sa.String(32), nullable=False),
        sa.Column("object_name", sa.String(300), nullable=False),
        sa.Column("environment", sa.String(253), nullable=True),
        sa.Column("record_seq", sa.Integer(), nullable=True),
        sa.Column("payload", tables.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
    )
    op.create_index(op.f("ix_notification_outbox_status_next_attempt_at"), "notification_outbox", ["status", "next_attempt_at"])
    op.create_index(op.f("ix_notification_outbox_tenant_id"), "notification_outbox", ["tenant", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_notification_outbox_tenant_id"), table_name="notification_outbox")
    op.drop_index(op.f("ix_notification_outbox_status_next_attempt_at"), table_name="notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_table("notification_channels")
