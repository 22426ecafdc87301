"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 00:49:32.060982
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import reconciler.state.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agent_templates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("project", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_templates")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_agent_templates_tenant_name")),
    )
    op.create_table(
        "agent_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("template", sa.String(length=253), nullable=False),
        sa.Column("parent", sa.String(length=253), nullable=True),
        sa.Column("lifecycle", sa.String(length=16), nullable=False),
        sa.Column("desired_lifecycle", sa.String(length=16), nullable=False),
        sa.Column("genome", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("genome_hash", sa.String(length=71), nullable=False),
        sa.Column("integrity", sa.String(length=16), nullable=False),
        sa.Column("conditions", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_versions")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_agent_versions_tenant_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("token_hash", sa.String(length=71), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("operator", sa.String(length=253), nullable=True),
        sa.Column("scope", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("subject_kind", sa.String(length=32), nullable=False),
        sa.Column("subject_name", sa.String(length=253), nullable=False),
        sa.Column("transition", sa.String(length=300), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column(
            "approver_roles", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decisions", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_sha", sa.String(length=40), nullable=True),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approvals_tenant_subject_kind_subject_name_status"),
            ["tenant", "subject_kind", "subject_name", "status"],
            unique=False,
        )

    op.create_table(
        "change_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=True),
        sa.Column("author", sa.String(length=400), nullable=False),
        sa.Column("operator", sa.String(length=253), nullable=True),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("object_kind", sa.String(length=32), nullable=False),
        sa.Column("object_name", sa.String(length=300), nullable=False),
        sa.Column("before", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
        sa.Column("after", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
        sa.Column("at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("prev_hash", sa.String(length=71), nullable=False),
        sa.Column("hash", sa.String(length=71), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_records")),
        sa.UniqueConstraint("tenant", "seq", name=op.f("uq_change_records_tenant_seq")),
    )
    with op.batch_alter_table("change_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_records_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_change_records_object_kind_object_name"), ["object_kind", "object_name"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_change_records_sha"), ["sha"], unique=False)
        batch_op.create_index(batch_op.f("ix_change_records_type"), ["type"], unique=False)

    op.create_table(
        "deployment_specs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("conditions", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_specs")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_deployment_specs_tenant_name")),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(length=253), nullable=False),
        sa.Column("environment", sa.String(length=253), nullable=False),
        sa.Column("version", sa.String(length=253), nullable=False),
        sa.Column("previous_version", sa.String(length=253), nullable=True),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("tenant", "name", "generation", name=op.f("uq_deployments_tenant_name_generation")),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployments_tenant_name_state"), ["tenant", "name", "state"], unique=False)

    op.create_table(
        "environments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_environments_tenant_name")),
    )
    op.create_table(
        "fleet_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=True),
        sa.Column("ref", sa.String(length=300), nullable=True),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("applied_sha", sa.String(length=40), nullable=True),
        sa.Column("applied_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("observed_generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_state")),
    )
    op.create_table(
        "op_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("instance", sa.String(length=300), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_op_events")),
    )
    with op.batch_alter_table("op_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_op_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_op_events_tenant_instance_at"), ["tenant", "instance", "at"], unique=False)

    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_operators_tenant_name")),
    )
    op.create_table(
        "policy_envelopes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("scope_kind", sa.String(length=32), nullable=False),
        sa.Column("scope_name", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_envelopes")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_policy_envelopes_tenant_name")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_projects_tenant_name")),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("ref", sa.String(length=300), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=True),
        sa.Column("author", sa.String(length=400), nullable=False),
        sa.Column("started_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("actions", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_runs")),
    )
    op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_roles_tenant_name")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_tenants_tenant_name")),
    )
    op.create_table(
        "tool_catalogs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=1024), nullable=False),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("updated_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_catalogs")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_tool_catalogs_tenant_name")),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("tenant", sa.String(length=253), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=253), nullable=False),
        sa.Column("environment", sa.String(length=253), nullable=False),
        sa.Column("template", sa.String(length=253), nullable=False),
        sa.Column("version", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("held_by", sa.String(length=64), nullable=True),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("last_heartbeat", reconciler.state.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_sha", sa.String(length=40), nullable=False),
        sa.Column("created_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", reconciler.state.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name=op.f("fk_instances_deployment_id_deployments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_deployment_id"), ["deployment_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instances_tenant_environment_state"), ["tenant", "environment", "state"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_tenant_environment_state"))
        batch_op.drop_index(batch_op.f("ix_instances_deployment_id"))

    op.drop_table("instances")
    op.drop_table("tool_catalogs")
    op.drop_table("tenants")
    op.drop_table("roles")
    op.drop_table("reconcile_runs")
    op.drop_table("projects")
    op.drop_table("policy_envelopes")
    op.drop_table("operators")
    with op.batch_alter_table("op_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_op_events_tenant_instance_at"))
        batch_op.drop_index(batch_op.f("ix_op_events_at"))

    op.drop_table("op_events")
    op.drop_table("fleet_state")
    op.drop_table("environments")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployments_tenant_name_state"))

    op.drop_table("deployments")
    op.drop_table("deployment_specs")
    with op.batch_alter_table("change_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_records_type"))
        batch_op.drop_index(batch_op.f("ix_change_records_sha"))
        batch_op.drop_index(batch_op.f("ix_change_records_object_kind_object_name"))
        batch_op.drop_index(batch_op.f("ix_change_records_at"))

    op.drop_table("change_records")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvals_tenant_subject_kind_subject_name_status"))

    op.drop_table("approvals")
    op.drop_table("api_tokens")
    op.drop_table("agent_versions")
    op.drop_table("agent_templates")
