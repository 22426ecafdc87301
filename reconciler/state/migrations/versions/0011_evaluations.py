"""evaluation_suites and evaluation_runs: promotion by recorded evidence

Runs are append-only: on both dialects a trigger refuses to update or delete one, so evidence
cannot be rewritten through the store's ordinary write paths.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reconciler.state import tables

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_REFUSAL = "evaluation runs are append-only"


def upgrade() -> None:
    op.create_table(
        "evaluation_suites",
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
        sa.Column("category", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_suites")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_evaluation_suites_tenant_name")),
    )
    op.create_table(
        "evaluation_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(253), nullable=False),
        sa.Column("version", sa.String(253), nullable=False),
        sa.Column("template", sa.String(253), nullable=False),
        sa.Column("genome_hash", sa.String(71), nullable=False),
        sa.Column("suite", sa.String(253), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("suite_digest", sa.String(64), nullable=False),
        sa.Column("metrics", tables.JSON, nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("run_url", sa.String(2048), nullable=True),
        sa.Column("details", tables.JSON, nullable=True),
        sa.Column("submitter", sa.String(300), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_runs")),
    )
    op.create_index(op.f("ix_evaluation_runs_tenant_version_suite"), "evaluation_runs", ["tenant", "version", "suite"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION arm_evaluation_runs_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER evaluation_runs_append_only BEFORE UPDATE OR DELETE ON evaluation_runs "
            "FOR EACH ROW EXECUTE FUNCTION arm_evaluation_runs_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER evaluation_runs_no_{event.lower()} BEFORE {event} ON evaluation_runs "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS evaluation_runs_append_only ON evaluation_runs")
        op.execute("DROP FUNCTION IF EXISTS arm_evaluation_runs_append_only()")
    op.drop_index(op.f("ix_evaluation_runs_tenant_version_suite"), table_name="evaluation_runs")
    op.drop_table("evaluation_runs")
    op.drop_table("evaluation_suites")
