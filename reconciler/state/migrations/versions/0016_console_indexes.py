"""agent_versions indexes for the console: counts by lifecycle and integrity, pages by template

A tenant's lifecycle and integrity counts and a page of its versions sorted by template and
name are read from these indexes alone; without them each read the versions' wide rows (genome,
envelope, conditions): ~0.1-0.5 s on 10,000 versions.

Revision ID: 0016
Revises: 0011
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_agent_versions_tenant_status_integrity_lifecycle"),
        "agent_versions",
        ["tenant", "status", "integrity", "lifecycle"],
    )
    op.create_index(op.f("ix_agent_versions_tenant_template_name"), "agent_versions", ["tenant", "template", "name"])


def downgrade() -> None:
    op.drop_index(op.f("ix_agent_versions_tenant_template_name"), table_name="agent_versions")
    op.drop_index(op.f("ix_agent_versions_tenant_status_integrity_lifecycle"), table_name="agent_versions")
