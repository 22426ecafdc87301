"""Version scorecards: what an approver reads before trusting a version.

``versions`` lists every version with its template, lifecycle, genome hash, where it runs and
what it waits for (``armctl version list``, ``GET /v1/versions``). ``version`` shows one whole
(``armctl version show``, ``GET /v1/versions/{name}``): lineage, the evidence of every suite that
applies to its template (``status: missing | passing | failing``, the values, the baseline
compared with and who submitted the run; judged by ``judging`` exactly as the gates judge it),
approvals with who decided and when, deployments with their instances, and integrity: the stored
genome is re-hashed on every such read, and a mismatch is marked and recorded as the audit does.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import integrity
from reconciler.evidence import judging, recording
from reconciler.state import database, tables

__all__ = ["show", "tenant_of", "version", "versions"]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _waiting(conditions: list[dict[str, Any]] | None) -> list[str]:
    return [c["message"] for c in conditions or []]


def tenant_of(connection: sa.Connection, name: str, tenant: str | None = None) -> str:
    """The tenant of version ``name`` (checked against ``tenant`` when given); ``errors.NotFound``
    when no tenant has it, ``errors.ConfigError`` when several do and ``tenant`` does not say."""
    v = tables.agent_versions.c
    tenants = sorted(connection.execute(sa.select(v.tenant).where(v.name == name)).scalars())
    if tenant is not None:
        if tenant not in tenants:
            raise errors.NotFound(f"version {name!r} does not exist in tenant {tenant!r}")
        return tenant
    if not tenants:
        raise errors.NotFound(f"version {name!r} does not exist")
    if len(tenants) > 1:
        raise errors.ConfigError(f"version {name!r} exists in tenants {', '.join(tenants)}: say which with --tenant")
    return tenants[0]


def versions(
    connection: sa.Connection,
    *,
    tenant: str | None = None,
    template: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Every version (pruned ones too, ``status: RETIRED``), by tenant, template and name;
    ``limit`` and ``offset``: one page of them (the console's)."""
    v = tables.agent_versions.c
    query = sa.select(
        v.tenant, v.name, v.template, v.parent, v.status, v.lifecycle, v.desired_lifecycle, v.genome_hash, v.integrity,
        v.conditions,
    )  # fmt: skip
    if tenant:
        query = query.where(v.tenant == tenant)
    if template:
        query = query.where(v.template == template)
    query = query.order_by(v.tenant, v.template, v.name)
    if limit is not None:
        # Sorted by the narrow key columns first, then only the page's rows read whole: sorting
        # 10,000 whole rows (conditions included) to keep 50 took ~60 ms on SQLite.
        page = sa.select(v.id).order_by(v.tenant, v.template, v.name).limit(limit).offset(offset)
        if tenant:
            page = page.where(v.tenant == tenant)
        if template:
            page = page.where(v.template == template)
        query = query.where(v.id.in_(page.scalar_subquery()))
    rows = connection.execute(query).all()
    deployed = _deployed(connection, tenant)
    return [
        {
            "name": row.name,
            "tenant": row.tenant,
            "template": row.template,
            "parent": row.parent,
            "status": row.status,
            "lifecycle": row.lifecycle,
            "desiredLifecycle": row.desired_lifecycle,
            "genomeHash": row.genome_hash,
            "integrity": row.integrity,
            "deployedTo": deployed.get((row.tenant, row.name), []),
            "waiting": _waiting(row.conditions),
        }
        for row in rows
    ]


def _deployed(connection: sa.Connection, tenant: str | None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(tenant, version) → where it runs: live deployment records and their live instances."""
    d, i = tables.deployments.c, tables.instances.c
    counts = sa.select(i.deployment_id, sa.func.count().label("n")).where(i.state != "RETIRED").group_by(i.deployment_id)
    live = {r.deployment_id: r.n for r in connection.execute(counts)}
    query = sa.select(d.id, d.tenant, d.name, d.environment, d.version, d.generation, d.state).where(d.state != "RETIRED")
    if tenant:
        query = query.where(d.tenant == tenant)
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in connection.execute(query.order_by(d.tenant, d.name, d.generation)):
        found[(r.tenant, r.version)].append(
            {"deployment": r.name, "environment": r.environment, "generation": r.generation, "state": r.state,
             "instances": live.get(r.id, 0)}
        )  # fmt: skip
    return found


def show(db: database.Engine, tenant: str | None, name: str, now: dt.datetime, *, resolve: bool = False) -> dict[str, Any]:
    """One version's scorecard, read without taking the store's write lock; only a re-hash that
    finds the genome newly altered writes (marks the version, records VERSION_INTEGRITY_FAILED).
    ``resolve``: ``tenant`` may be None, found from the version's name (``tenant_of``)."""
    with database.reading(db) as connection:
        if resolve:
            tenant = tenant_of(connection, name, tenant)
        assert tenant is not None
        card, newly_tampered = _card(connection, tenant, name, now)
    if newly_tampered:
        with database.transaction(db) as connection:
            integrity.verify_genomes(connection, now, tenant=tenant, name=name)
    return card


def version(connection: sa.Connection, tenant: str, name: str, now: dt.datetime) -> dict[str, Any]:
    """One version's scorecard (see the module docstring) in the caller's transaction;
    ``errors.NotFound`` when it does not exist in ``tenant``. Writes only when the re-hash finds
    the genome newly altered."""
    card, newly_tampered = _card(connection, tenant, name, now)
    if newly_tampered:
        integrity.verify_genomes(connection, now, tenant=tenant, name=name)
    return card


def _card(connection: sa.Connection, tenant: str, name: str, now: dt.datetime) -> tuple[dict[str, Any], bool]:
    v = tables.agent_versions
    row = connection.execute(sa.select(v).where(v.c.tenant == tenant, v.c.name == name)).mappings().first()
    if row is None:
        raise errors.NotFound(f"version {name!r} does not exist in tenant {tenant!r}")
    computed = integrity.check_version(row["genome"], row["genome_hash"])
    status = "FAILED" if computed is not None else row["integrity"]
    card: dict[str, Any] = {
        "name": row["name"],
        "tenant": tenant,
        "template": row["template"],
        "status": row["status"],
        "lifecycle": row["lifecycle"],
        "desiredLifecycle": row["desired_lifecycle"],
        "genomeHash": row["genome_hash"],
        "integrity": {
            "status": status,
            "checkedAt": now.isoformat(),
            "computedHash": computed or row["genome_hash"],
        },
        "lineage": _lineage(connection, tenant, row),
        "evidence": _evidence(connection, tenant, row),
        "approvals": _approvals(connection, tenant, name),
        "deployments": _deployments(connection, tenant, name),
        "waiting": _waiting(row["conditions"]),
        "createdSha": row["created_sha"],
        "createdAt": _iso(row["created_at"]),
    }
    return card, computed is not None and row["integrity"] != "FAILED"


def _lineage(connection: sa.Connection, tenant: str, row: Any) -> dict[str, Any]:
    v = tables.agent_versions.c
    rows = connection.execute(
        sa.select(v.name, v.parent, v.lifecycle, v.genome_hash).where(v.tenant == tenant, v.template == row["template"])
    ).all()
    by_name = {r.name: r for r in rows}
    ancestors = []
    seen = {row["name"]}
    parent = row["parent"]
    while parent is not None and parent in by_name and parent not in seen:
        seen.add(parent)
        p = by_name[parent]
        ancestors.append({"name": p.name, "lifecycle": p.lifecycle, "genomeHash": p.genome_hash})
        parent = p.parent
    children = sorted(r.name for r in rows if r.parent == row["name"])
    return {"parent": row["parent"], "ancestors": ancestors, "children": children}


def _evidence(connection: sa.Connection, tenant: str, row: Any) -> list[dict[str, Any]]:
    """Every applied suite that applies to the version's template, judged over its runs."""
    labels = recording.template_labels(connection, tenant, row["template"])
    suites = {
        name: facts
        for name, (facts, _) in recording.applied_suites(connection, tenant).items()
        if judging.applies(facts, row["template"], labels)
    }
    if not suites:
        return []
    parent = row["parent"]
    v = tables.agent_versions.c
    parent_hash = (
        connection.execute(sa.select(v.genome_hash).where(v.tenant == tenant, v.name == parent)).scalar() if parent else None
    )
    runs = recording.runs_of(connection, tenant, [row["name"], *([parent] if parent else [])])
    stored = {r["id"]: r for r in recording.list_runs(connection, tenant=tenant, version=row["name"], limit=100_000)}
    evidence = []
    for name, facts in suites.items():
        if facts["category"] == "regression" and parent is not None:
            verdict = judging.judge(
                name, facts, row["genome_hash"], runs[row["name"]], parent=parent, parent_hash=parent_hash,
                parent_runs=runs.get(parent, []),
            )  # fmt: skip
        else:
            verdict = judging.judge(name, facts, row["genome_hash"], runs[row["name"]])
        run = stored.get(verdict.run) if verdict.run is not None else None
        required = facts["requiredFor"]
        evidence.append(
            verdict.as_dict()
            | {
                "requiredFor": {"steps": required["steps"], "environments": required["environments"]},
                "onFailure": facts["onFailure"],
                "submitter": run["submitter"] if run else None,
                "runAt": run["at"] if run else None,
                "runUrl": run["runUrl"] if run else None,
                "runs": sum(1 for r in runs[row["name"]] if r.suite == name),
            }
        )
    return evidence


def _approvals(connection: sa.Connection, tenant: str, name: str) -> list[dict[str, Any]]:
    a = tables.approvals.c
    query = sa.select(tables.approvals).where(a.tenant == tenant, a.subject_kind == "AgentVersion", a.subject_name == name)
    return [
        {
            "id": r["id"],
            "transition": r["transition"],
            "status": r["status"],
            "required": r["required"],
            "roles": list(r["approver_roles"]),
            "decisions": [{k: d.get(k) for k in ("operator", "decision", "justification", "at")} for d in r["decisions"] or []],
            "requestedAt": _iso(r["created_at"]),
            "decidedAt": _iso(r["decided_at"]),
        }
        for r in connection.execute(query.order_by(a.id)).mappings()
    ]


def _deployments(connection: sa.Connection, tenant: str, name: str) -> list[dict[str, Any]]:
    d, i = tables.deployments.c, tables.instances.c
    records = connection.execute(
        sa.select(tables.deployments).where(d.tenant == tenant, d.version == name).order_by(d.name, d.generation)
    ).mappings()
    out = []
    for r in records:
        instances = connection.execute(
            sa.select(i.id, i.state, i.held_by, i.health).where(i.deployment_id == r["id"], i.state != "RETIRED").order_by(i.id)
        ).all()
        out.append(
            {
                "name": r["name"],
                "environment": r["environment"],
                "generation": r["generation"],
                "state": r["state"],
                "rollout": r["rollout"],
                "previousVersion": r["previous_version"],
                "instances": [{"id": x.id, "state": x.state, "heldBy": x.held_by, "health": x.health} for x in instances],
            }
        )
    return out
