"""The actual state, read from the database into plain data for the (pure) planner.

``load(connection)`` reads, in one query per table, just the columns a plan needs: identities,
digests, statuses and lifecycles of every object, the deployment records, instances, open and
decided approvals, the evaluation runs recorded for each version (the gates' evidence), and the
head of each tenant's change-record chain. Specs and genomes are not
read here (they can be large); the applier reads the few it needs for ``before`` values. Rows
are named tuples: a fleet of 10,000 versions makes tens of thousands of them per reconcile.

Instance health is not part of it: heartbeats change it all the time without bumping the state
generation, so a cached state would be stale. ``canary_health`` reads it fresh, for the only
instances whose health a plan needs (those of canary rollouts in progress).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from reconciler.state import database, tables

__all__ = [
    "CANARY_IN_PROGRESS",
    "Actual",
    "ApprovalRow",
    "DeploymentRecord",
    "InstanceRow",
    "ObjectRow",
    "RunRow",
    "canaries_in_progress",
    "canary_health",
    "load",
]

GENESIS_HASH = "sha256:" + "0" * 64

#: ``deployments.rollout`` values of a canary that still moves (or would, once healthy again).
CANARY_IN_PROGRESS = ("PROGRESSING", "HALTED")


class ObjectRow(NamedTuple):
    id: int
    kind: str
    tenant: str
    name: str
    digest: str
    status: str
    lifecycle: str | None = None  # versions only, likewise below
    genome_hash: str | None = None
    integrity: str | None = None
    template: str | None = None
    envelope_digest: str | None = None


class DeploymentRecord(NamedTuple):
    id: int
    tenant: str
    name: str
    generation: int
    template: str
    environment: str
    version: str
    previous_version: str | None
    replicas: int
    strategy: dict[str, Any]
    state: str
    rollout: str | None = None  # see tables.deployments
    canary_step: int | None = None


class InstanceRow(NamedTuple):
    id: str
    tenant: str
    deployment_id: int
    deployment: str
    version: str
    state: str
    held_by: str | None


class ApprovalRow(NamedTuple):
    id: int
    tenant: str
    subject_kind: str
    subject_name: str
    transition: str
    required: int
    approver_roles: list[str]
    status: str
    decisions: list[dict[str, Any]]


class RunRow(NamedTuple):
    """An evaluation run as the gates judge it (``evidence.judging``). ``raw_metrics`` is the
    metrics as stored (JSON text) or already a dict: a plan reads every run, and most are never
    judged (their version takes no gated step), so their metrics are decoded only when asked."""

    id: int
    suite: str
    genome_hash: str
    raw_metrics: Any
    samples: int

    @property
    def metrics(self) -> dict[str, float]:
        raw = self.raw_metrics
        return raw if isinstance(raw, dict) else orjson.loads(raw)  # type: ignore[no-any-return]


@dataclasses.dataclass
class Actual:
    applied_sha: str | None = None
    policy_digest: str | None = None
    generation: int = 0
    observed_generation: int = 0
    objects: dict[tuple[str, str, str], ObjectRow] = dataclasses.field(default_factory=dict)
    deployments: dict[tuple[str, str], list[DeploymentRecord]] = dataclasses.field(default_factory=dict)
    instances: dict[int, list[InstanceRow]] = dataclasses.field(default_factory=dict)
    #: record id → instances ever created for it, retired ones included (so the next ordinal:
    #: instance ids are never reused), for records that are not retired and have any
    instance_counts: dict[int, int] = dataclasses.field(default_factory=dict)
    approvals: dict[tuple[str, str, str, str], list[ApprovalRow]] = dataclasses.field(default_factory=dict)
    chain_heads: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    #: (kind, tenant, name) → stored conditions, for versions and deployments that have any
    conditions: dict[tuple[str, str, str], list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    #: (tenant, version, suite) → the version's runs of the suite, oldest first (runs are append-only)
    evaluations: dict[tuple[str, str, str], list[RunRow]] = dataclasses.field(default_factory=dict)
    #: tenant → the kill switch pulled on it (pause | quarantine), for tenants held
    tenant_holds: dict[str, str] = dataclasses.field(default_factory=dict)
    _digests: dict[str, set[tuple[str, str, str]]] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def active_digests(self, kind: str) -> set[tuple[str, str, str]]:
        """(tenant, name, digest) of the ACTIVE objects of ``kind`` (computed once per kind)."""
        if not self._digests:
            for (k, _, _), row in self.objects.items():
                if row.status == "ACTIVE":
                    self._digests.setdefault(k, set()).add((row.tenant, row.name, row.digest))
            self._digests.setdefault("", set())  # marks the index as built
        return self._digests.get(kind, set())

    def current_deployment(self, tenant: str, name: str) -> DeploymentRecord | None:
        """The newest record of a Deployment that is not retired."""
        for record in reversed(self.deployments.get((tenant, name), [])):
            if record.state != "RETIRED":
                return record
        return None

    def live_deployments(self, tenant: str, name: str) -> list[DeploymentRecord]:
        """A Deployment's records that are not retired, oldest first: one, or during a canary
        rollout the previous record and the canary."""
        return [r for r in self.deployments.get((tenant, name), []) if r.state != "RETIRED"]

    def has_canaries(self) -> bool:
        return any(r.rollout in CANARY_IN_PROGRESS for records in self.deployments.values() for r in records)

    def chain_head(self, tenant: str) -> tuple[int, str]:
        return self.chain_heads.get(tenant, (0, GENESIS_HASH))


def load(connection: sa.Connection) -> Actual:
    actual = Actual()
    r: Any  # rows of several shapes below
    state = connection.execute(sa.select(tables.fleet_state).where(tables.fleet_state.c.id == 1)).first()
    if state is not None:
        actual.applied_sha = state.applied_sha
        actual.policy_digest = state.policy_digest
        actual.generation = state.generation
        actual.observed_generation = state.observed_generation
    for kind, table in tables.KIND_TABLES.items():
        c = table.c
        if kind == "AgentVersion":
            rows = connection.execute(
                sa.select(
                    c.id,
                    c.tenant,
                    c.name,
                    c.digest,
                    c.status,
                    c.lifecycle,
                    c.genome_hash,
                    c.integrity,
                    c.template,
                    c.envelope_digest,
                )
            ).all()
            for r in rows:
                actual.objects[(kind, r.tenant, r.name)] = ObjectRow(
                    r.id,
                    kind,
                    r.tenant,
                    r.name,
                    r.digest,
                    r.status,
                    r.lifecycle,
                    r.genome_hash,
                    r.integrity,
                    r.template,
                    r.envelope_digest,
                )
        else:
            for r in connection.execute(sa.select(c.id, c.tenant, c.name, c.digest, c.status)).all():
                actual.objects[(kind, r.tenant, r.name)] = ObjectRow(r.id, kind, r.tenant, r.name, r.digest, r.status)
    for kind in ("AgentVersion", "Deployment"):
        c = tables.KIND_TABLES[kind].c
        stored = sa.select(c.tenant, c.name, c.conditions).where(sa.cast(c.conditions, sa.Text) != "[]")
        for r in connection.execute(stored):
            if r.conditions:
                actual.conditions[(kind, r.tenant, r.name)] = r.conditions
    d = tables.deployments.c
    records: dict[tuple[str, str], list[DeploymentRecord]] = defaultdict(list)
    for r in connection.execute(sa.select(tables.deployments).order_by(d.tenant, d.name, d.generation)):
        records[(r.tenant, r.name)].append(
            DeploymentRecord(
                r.id,
                r.tenant,
                r.name,
                r.generation,
                r.template,
                r.environment,
                r.version,
                r.previous_version,
                r.replicas,
                r.strategy,
                r.state,
                r.rollout,
                r.canary_step,
            )
        )
    actual.deployments = dict(records)
    i = tables.instances.c
    instances: dict[int, list[InstanceRow]] = defaultdict(list)
    query = sa.select(i.id, i.tenant, i.deployment_id, i.deployment, i.version, i.state, i.held_by).where(i.state != "RETIRED")
    for r in connection.execute(query.order_by(i.id)):
        instances[r.deployment_id].append(
            InstanceRow(r.id, r.tenant, r.deployment_id, r.deployment, r.version, r.state, r.held_by)
        )
    actual.instances = dict(instances)
    d_ = tables.deployments
    created = (
        sa.select(i.deployment_id, sa.func.count().label("n"))
        .join_from(tables.instances, d_, i.deployment_id == d_.c.id)
        .where(d_.c.state != "RETIRED")
        .group_by(i.deployment_id)
    )
    actual.instance_counts = {r.deployment_id: r.n for r in connection.execute(created)}
    a = tables.approvals.c
    approvals: dict[tuple[str, str, str, str], list[ApprovalRow]] = defaultdict(list)
    for r in connection.execute(
        sa.select(tables.approvals).where(a.status.in_(("PENDING", "APPROVED", "DENIED"))).order_by(a.id)
    ):
        approvals[(r.tenant, r.subject_kind, r.subject_name, r.transition)].append(
            ApprovalRow(
                r.id, r.tenant, r.subject_kind, r.subject_name, r.transition, r.required, r.approver_roles, r.status, r.decisions
            )
        )
    actual.approvals = dict(approvals)
    actual.evaluations = _runs(connection)
    h = tables.tenant_holds.c
    actual.tenant_holds = {r.tenant: r.control for r in connection.execute(sa.select(h.tenant, h.control))}
    cr = tables.change_records.c
    latest = sa.select(cr.tenant, sa.func.max(cr.seq).label("seq")).group_by(cr.tenant).subquery()
    heads = sa.select(cr.tenant, cr.seq, cr.hash).join(latest, sa.and_(cr.tenant == latest.c.tenant, cr.seq == latest.c.seq))
    for r in connection.execute(heads):
        actual.chain_heads[r.tenant] = (r.seq, r.hash)
    return actual


def _runs(connection: sa.Connection) -> dict[tuple[str, str, str], list[RunRow]]:
    """Every evaluation run by (tenant, version, suite), oldest first. A fleet records a few runs per
    version: tens of thousands of rows, read through the driver (SQLAlchemy's row and JSON
    processing cost more than the query) with the metrics left as JSON text."""
    metrics = "metrics::text" if connection.dialect.name == "postgresql" else "metrics"
    cursor = database.driver_cursor(connection)
    cursor.execute(f"SELECT id, tenant, version, suite, genome_hash, {metrics}, samples FROM evaluation_runs ORDER BY id")
    runs: dict[tuple[str, str, str], list[RunRow]] = defaultdict(list)
    for run_id, tenant, version, suite, genome_hash, raw, samples in cursor.fetchall():
        runs[(tenant, version, suite)].append(RunRow(run_id, suite, genome_hash, raw, samples))
    return dict(runs)


def canaries_in_progress(connection: sa.Connection) -> bool:
    """Whether any deployment record is in a canary rollout (one indexed row at most)."""
    d = tables.deployments.c
    return connection.execute(sa.select(d.id).where(d.rollout.in_(CANARY_IN_PROGRESS)).limit(1)).first() is not None


def canary_health(connection: sa.Connection) -> dict[str, str]:
    """instance id → health (UNKNOWN | HEALTHY | UNHEALTHY) of the live instances of canaries in progress."""
    i, d = tables.instances, tables.deployments
    query = (
        sa.select(i.c.id, i.c.health)
        .join_from(i, d, i.c.deployment_id == d.c.id)
        .where(d.c.rollout.in_(CANARY_IN_PROGRESS), i.c.state != "RETIRED")
    )
    return {r.id: r.health for r in connection.execute(query)}
