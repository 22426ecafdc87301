"""The SQL schema: one table per manifest kind, plus instances, approvals, change records, op
events, reconcile runs, API tokens, evaluation runs, the fleet's applied revision, and the
evidence tables (signing keys' public halves, chain checkpoints, op-event archives).

SQLAlchemy Core tables (no ORM: the reconciler reads and writes in bulk). The same metadata runs
on SQLite and PostgreSQL; JSON is JSONB on PostgreSQL. Alembic migrations in ``migrations/`` are
generated from this module. Rows of manifest kinds are never deleted: a pruned object gets
``status = 'RETIRED'``. ``change_records`` is append-only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = ["KIND_TABLES", "metadata"]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _object_table(name: str, *extra: Any) -> sa.Table:
    """A table for one manifest kind: identity, desired spec, provenance, status.

    Every kind has a ``tenant`` column, tenants included (their own name), so one query shape
    serves all kinds.
    """
    columns: list[Any] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("labels", JSON, nullable=False, default=dict),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),  # of the manifest as last applied
        sa.Column("status", sa.String(16), nullable=False, default="ACTIVE"),  # ACTIVE | RETIRED (pruned)
        sa.Column("origin", sa.String(1024), nullable=False, default=""),  # file:line it was declared at
        sa.Column("created_sha", sa.String(40), nullable=False),
        sa.Column("updated_sha", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        *extra,
    ]
    return sa.Table(name, metadata, *columns, sa.UniqueConstraint("tenant", "name"))


tenants = _object_table("tenants")
projects = _object_table("projects")
environments = _object_table("environments")
roles = _object_table("roles")
operators = _object_table("operators", sa.Column("email", sa.String(320), nullable=False))
tool_catalogs = _object_table("tool_catalogs")
agent_templates = _object_table("agent_templates", sa.Column("project", sa.String(253), nullable=False))
agent_versions = _object_table(
    "agent_versions",
    sa.Column("template", sa.String(253), nullable=False),
    sa.Column("parent", sa.String(253), nullable=True),
    sa.Column("lifecycle", sa.String(16), nullable=False),  # actual state
    sa.Column("desired_lifecycle", sa.String(16), nullable=False),
    sa.Column("genome", JSON, nullable=False),  # canonical genome document
    sa.Column("genome_hash", sa.String(71), nullable=False),
    sa.Column("integrity", sa.String(16), nullable=False, default="OK"),  # OK | FAILED
    sa.Column("conditions", JSON, nullable=False, default=list),
    # The effective policy envelope (version > template > project > tenant), computed at apply
    # so a decision reads it instead of merging four scopes per request.
    sa.Column("envelope", JSON, nullable=True),
    sa.Column("envelope_digest", sa.String(71), nullable=True),
)
evaluation_suites = _object_table("evaluation_suites", sa.Column("category", sa.String(16), nullable=False))
policy_envelopes = _object_table(
    "policy_envelopes",
    sa.Column("scope_kind", sa.String(32), nullable=False),
    sa.Column("scope_name", sa.String(253), nullable=False),
)
notification_channels = _object_table("notification_channels")
deployment_specs = _object_table(
    "deployment_specs",  # the Deployment manifests; each version change makes a ``deployments`` record
    sa.Column("conditions", JSON, nullable=False, default=list),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("template", sa.String(253), nullable=False),
    sa.Column("environment", sa.String(253), nullable=False),
    sa.Column("version", sa.String(253), nullable=False),
    sa.Column("previous_version", sa.String(253), nullable=True),
    sa.Column("replicas", sa.Integer, nullable=False),
    sa.Column("strategy", JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # PENDING | ACTIVE | ROLLING_BACK | RETIRED
    sa.Column("created_sha", sa.String(40), nullable=False),
    sa.Column("updated_sha", sa.String(40), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # A record rolled out by a Canary strategy: PROGRESSING | HALTED while it takes over weight
    # step by step, then COMPLETE, ROLLED_BACK (canary unhealthy) or ABORTED (Git moved on);
    # NULL for a record rolled out all at once. ``canary_step`` indexes ``strategy.steps``.
    sa.Column("rollout", sa.String(16), nullable=True),
    sa.Column("canary_step", sa.Integer, nullable=True),
    sa.UniqueConstraint("tenant", "name", "generation"),
    sa.Index(None, "tenant", "name", "state"),
    sa.Index(None, "rollout"),  # the daemon's canary job asks "any rollout in progress?" on every tick
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(300), primary_key=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False),
    sa.Column("deployment", sa.String(253), nullable=False),
    sa.Column("environment", sa.String(253), nullable=False),
    sa.Column("template", sa.String(253), nullable=False),
    sa.Column("version", sa.String(253), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("held_by", sa.String(64), nullable=True),  # the emergency control holding it, if any
    sa.Column("health", sa.String(16), nullable=False, default="UNKNOWN"),
    sa.Column("last_heartbeat", UTCDateTime, nullable=True),
    sa.Column("created_sha", sa.String(40), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "tenant", "environment", "state"),
    sa.Index(None, "deployment_id"),
)

# A tenant's kill switch, while it is pulled: every decision for the tenant's instances is
# DENY, those created after it was pulled included, until an operator resumes the tenant.
tenant_holds = sa.Table(
    "tenant_holds",
    metadata,
    sa.Column("tenant", sa.String(253), primary_key=True),
    sa.Column("control", sa.String(16), nullable=False),  # pause | quarantine
    sa.Column("operator", sa.String(253), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("held_at", UTCDateTime, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("subject_kind", sa.String(32), nullable=False),
    sa.Column("subject_name", sa.String(253), nullable=False),
    sa.Column("transition", sa.String(300), nullable=False),
    sa.Column("required", sa.Integer, nullable=False),
    sa.Column("approver_roles", JSON, nullable=False),
    sa.Column(
        "status", sa.String(16), nullable=False
    ),  # PENDING | APPROVED | DENIED | EXPIRED | USED (a tool call approved and made)
    sa.Column("decisions", JSON, nullable=False, default=list),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("requested_sha", sa.String(40), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("decided_at", UTCDateTime, nullable=True),
    # Escalation: after ``escalate_at`` the ``escalate_to`` roles may decide too (set once, when swept).
    sa.Column("escalate_at", UTCDateTime, nullable=True),
    sa.Column("escalate_to", JSON, nullable=True),
    sa.Column("escalated_at", UTCDateTime, nullable=True),
    sa.Index(None, "tenant", "subject_kind", "subject_name", "status"),
    sa.Index(None, "status", "expires_at"),
)

change_records = sa.Table(
    "change_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # position in the tenant's chain, from 1
    sa.Column("sha", sa.String(40), nullable=True),  # the commit applied; null for API-made changes
    sa.Column("author", sa.String(400), nullable=False, default=""),
    sa.Column("operator", sa.String(253), nullable=True),
    sa.Column("type", sa.String(48), nullable=False),
    sa.Column("object_kind", sa.String(32), nullable=False),
    sa.Column("object_name", sa.String(300), nullable=False),
    sa.Column("before", JSON, nullable=True),
    sa.Column("after", JSON, nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("prev_hash", sa.String(71), nullable=False),
    sa.Column("hash", sa.String(71), nullable=False),
    sa.UniqueConstraint("tenant", "seq"),
    sa.Index(None, "sha"),
    sa.Index(None, "object_kind", "object_name"),
    sa.Index(None, "type"),
    sa.Index(None, "at"),
)

op_events = sa.Table(
    "op_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("type", sa.String(48), nullable=False),
    sa.Column("instance", sa.String(300), nullable=True),
    sa.Column("payload", JSON, nullable=False),
    # DECISION events: the call's identity (tool and arguments), which loop detection counts.
    sa.Column("call_key", sa.String(32), nullable=True),
    # Decisions are most of the rows and are written on the request path: they are in the time
    # index only, which every insert appends to. An index led by the instance would put each
    # insert on another page, and each such page is rewritten to the WAL on every commit (four
    # such indexes made a stored decision cost ~60 µs instead of ~10). Windows of decisions
    # (the ledger's seed; a one-shot ``armctl decide`` counting repeats) are read through the
    # time index: the server counts them in memory.
    sa.Index(None, "at"),
    # Budgets sum an instance's COST events without reading its decisions. Partial: queries say
    # ``type = 'COST'`` as a literal (``COST_ONLY``), since a plan made for any parameter value
    # (PostgreSQL's generic plans) cannot use it.
    sa.Index(
        "ix_op_events_cost_tenant_instance_at",
        "tenant",
        "instance",
        "at",
        sqlite_where=sa.text("type = 'COST'"),
        postgresql_where=sa.text("type = 'COST'"),
    ),
)

#: The WHERE term that lets a query use the partial COST index.
COST_ONLY = op_events.c.type == sa.literal_column("'COST'")

reconcile_runs = sa.Table(
    "reconcile_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("ref", sa.String(300), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("sha", sa.String(40), nullable=True),
    sa.Column("author", sa.String(400), nullable=False, default=""),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # RUNNING | APPLIED | NOOP | FAILED
    sa.Column("actions", sa.Integer, nullable=False, default=0),
    sa.Column("errors", JSON, nullable=False, default=list),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("token_hash", sa.String(71), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # runtime | operator | ci
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("operator", sa.String(253), nullable=True),
    # {"instances": [...]} limits a runtime token, {"templates": [...]} a ci token
    sa.Column("scope", JSON, nullable=False, default=dict),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

fleet_state = sa.Table(
    "fleet_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("source", sa.String(1024), nullable=True),
    sa.Column("ref", sa.String(300), nullable=True),
    sa.Column("path", sa.String(1024), nullable=True),
    sa.Column("applied_sha", sa.String(40), nullable=True),
    sa.Column("applied_at", UTCDateTime, nullable=True),
    # Bumped by anything that can unblock a waiting object outside Git (an approval decided,
    # an instance control, a heartbeat); a reconcile of the applied SHA at the same generation
    # has nothing to do.
    sa.Column("generation", sa.Integer, nullable=False, default=0),
    sa.Column("observed_generation", sa.Integer, nullable=False, default=0),
    # Digest of the Rego (library and fleet) the applied commit was planned with: gate results
    # stored as conditions stay valid while it, the generation and the gates' inputs are unchanged.
    sa.Column("policy_digest", sa.String(71), nullable=True),
)

policy_modules = sa.Table(
    "policy_modules",
    metadata,
    # The fleet's Rego modules of the applied commit (the library ships with the code): what
    # decision engines and the OPA bundle load, without Git access.
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sha", sa.String(40), nullable=False),
)

# Evidence (reconciler/evidence): the public halves of the signing keys, the signed checkpoints of
# each tenant's change-record chain, and the op-event archives those checkpoints list.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),  # first 16 hex digits of sha256(raw public key)
    sa.Column("algorithm", sa.String(16), nullable=False),  # EdDSA (Ed25519)
    sa.Column("public_key", sa.String(64), nullable=False),  # base64 of the 32 raw bytes
    sa.Column("source", sa.String(16), nullable=False),  # managed (state directory) | file (ARM_SIGNING_KEY_FILE)
    sa.Column("created_at", UTCDateTime, nullable=False),
)

chain_checkpoints = sa.Table(
    "chain_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # the tenant's checkpoints, from 1
    sa.Column("seq", sa.Integer, nullable=False),  # the chain record it anchors (0: none yet)
    sa.Column("head", sa.String(71), nullable=False),  # that record's hash
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("previous", sa.String(71), nullable=False),  # the previous checkpoint's hash
    sa.Column("archives", JSON, nullable=False),  # op-event archives made since the previous one
    sa.Column("pruned", JSON, nullable=False),  # archives deleted since, past their retention
    sa.Column("kid", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),  # Ed25519 over the canonical body, base64
    sa.Column("hash", sa.String(71), nullable=False),
    sa.UniqueConstraint("tenant", "number"),
)

op_event_archives = sa.Table(
    "op_event_archives",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("name", sa.String(300), nullable=False, unique=True),  # file name in the archive directory
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("first_id", sa.BigInteger, nullable=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("last_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("keep_until", UTCDateTime, nullable=False),  # the archive retention ends then
    sa.Column("listed_in", sa.Integer, nullable=True),  # the checkpoint that lists it
    sa.Column("pruned_at", UTCDateTime, nullable=True),
    sa.Column("pruned_in", sa.Integer, nullable=True),  # the checkpoint that lists its pruning
    sa.Index(None, "tenant", "last_at"),
)

# Evidence: what an evaluation harness measured of one version's genome, recorded through the
# API by a CI token or an operator (``evidence.recording``). Append-only: nothing updates or
# deletes a run (triggers refuse it, see the migration); gates and scorecards judge the runs
# against the suite as the applied commit declares it, so ``verdict`` is only what the run was
# judged when it was recorded.
evaluation_runs = sa.Table(
    "evaluation_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("version", sa.String(253), nullable=False),
    sa.Column("template", sa.String(253), nullable=False),
    sa.Column("genome_hash", sa.String(71), nullable=False),  # the version's, at submission
    sa.Column("suite", sa.String(253), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("suite_digest", sa.String(64), nullable=False),  # of the suite's manifest as applied then
    sa.Column("metrics", JSON, nullable=False),  # metric name -> value
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("run_url", sa.String(2048), nullable=True),
    sa.Column("details", JSON, nullable=True),
    sa.Column("submitter", sa.String(300), nullable=False),  # "operator <name>" | "ci token <name>"
    sa.Column("verdict", sa.String(16), nullable=False),  # passing | failing | missing, when recorded
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index(None, "tenant", "version", "suite"),
)

# Notifications (reconciler/notifications): one row per (event, channel) that must be told, written
# in the transaction of the change (or failed run) it tells, so a committed change is never lost
# and a rolled-back one never sent; the delivery worker drains it. ``payload`` holds what is sent
# (never the URL or the signing key: those are read from the environment at delivery).
notification_outbox = sa.Table(
    "notification_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(253), nullable=False),
    sa.Column("channel", sa.String(253), nullable=False),
    sa.Column("event", sa.String(48), nullable=False),
    sa.Column("object_kind", sa.String(32), nullable=False),
    sa.Column("object_name", sa.String(300), nullable=False),
    sa.Column("environment", sa.String(253), nullable=True),
    sa.Column("record_seq", sa.Integer, nullable=True),  # the change record it tells, in the tenant's chain
    sa.Column("payload", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # PENDING | DELIVERED | FAILED (gave up)
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    # A worker that claimed the row until then (another worker leaves it alone; a crashed one's
    # claim runs out and the row is tried again: delivery is at least once, X-ARM-Delivery dedupes).
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),  # HTTP status of the last attempt
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "tenant", "id"),
)

#: Manifest kind → its table (Deployment manifests live in ``deployment_specs``).
KIND_TABLES: dict[str, sa.Table] = {
    "Tenant": tenants,
    "Project": projects,
    "Environment": environments,
    "Role": roles,
    "Operator": operators,
    "ToolCatalog": tool_catalogs,
    "AgentTemplate": agent_templates,
    "EvaluationSuite": evaluation_suites,
    "AgentVersion": agent_versions,
    "PolicyEnvelope": policy_envelopes,
    "Deployment": deployment_specs,
    "NotificationChannel": notification_channels,
}
