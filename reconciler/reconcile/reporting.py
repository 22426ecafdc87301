"""Reading the state back for people: status, history of change records, reconcile runs.

Plain queries shaped for ``armctl status`` and ``armctl history`` (and the HTTP status
endpoint): the applied revision, the last runs with their errors, objects that wait on a gate
or are held by an emergency control, versions whose genome failed verification (and the instances
denied for it), canary rollouts in progress, counts by lifecycle, and
change records filtered by commit, object, type and time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.oversight import holds
from reconciler.state import actual as actual_
from reconciler.state import fleetstate, tables

__all__ = [
    "changed_fields",
    "deployments",
    "describe_updates",
    "fleet_conditions",
    "history",
    "instances",
    "instances_by_environment",
    "object_conditions",
    "status",
]

#: The columns an instance is listed with (``GET /v1/instances``, ``armctl instance list``).
INSTANCE_COLUMNS = (
    "id",
    "tenant",
    "deployment",
    "environment",
    "template",
    "version",
    "state",
    "held_by",
    "health",
    "last_heartbeat",
)


def instances(
    connection: sa.Connection,
    *,
    tenant: str | None = None,
    environment: str | None = None,
    deployment: str | None = None,
    state: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Instances matching the filters (every state but RETIRED unless ``state``), by tenant and
    id, times as ISO 8601 text; ``tenant_hold`` is the tenant's kill switch while it is pulled
    (pause, quarantine): every decision of the instance is then DENY, whatever its own state.
    ``limit`` and ``offset``: one page of them (the console's)."""
    i, h = tables.instances.c, tables.tenant_holds.c
    query = sa.select(*(i[name] for name in INSTANCE_COLUMNS), h.control.label("tenant_hold"))
    query = query.select_from(tables.instances.outerjoin(tables.tenant_holds, h.tenant == i.tenant))
    if tenant:
        query = query.where(i.tenant == tenant)
    if environment:
        query = query.where(i.environment == environment)
    if deployment:
        query = query.where(i.deployment == deployment)
    query = query.where(i.state == state.upper()) if state else query.where(i.state != "RETIRED")
    query = query.order_by(i.tenant, i.id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    rows = connection.execute(query).mappings()
    return [{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()} for row in rows]


def instances_by_environment(connection: sa.Connection, tenant: str) -> dict[str, dict[str, int]]:
    """Environment → instance state → how many instances of ``tenant`` (retired ones left out)."""
    i = tables.instances.c
    query = (
        sa.select(i.environment, i.state, sa.func.count().label("n"))
        .where(i.tenant == tenant, i.state != "RETIRED")
        .group_by(i.environment, i.state)
        .order_by(i.environment, i.state)
    )
    found: dict[str, dict[str, int]] = {}
    for row in connection.execute(query):
        found.setdefault(row.environment, {})[row.state] = row.n
    return found


def deployments(connection: sa.Connection, tenant: str, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """One page of ``tenant``'s live deployment records (not retired), by name and generation:
    environment, version and the one it replaces, replicas, strategy, state, rollout and weight,
    and how many of its instances are live."""
    d, i = tables.deployments.c, tables.instances.c
    query = (
        sa.select(tables.deployments)
        .where(d.tenant == tenant, d.state != "RETIRED")
        .order_by(d.name, d.generation)
        .limit(limit)
        .offset(offset)
    )
    rows = connection.execute(query).mappings().all()
    live: dict[int, int] = {}
    if rows:
        counts = (
            sa.select(i.deployment_id, sa.func.count().label("n"))
            .where(i.deployment_id.in_([r["id"] for r in rows]), i.state != "RETIRED")
            .group_by(i.deployment_id)
        )
        live = {r.deployment_id: r.n for r in connection.execute(counts)}
    out = []
    for row in rows:
        steps = list((row["strategy"] or {}).get("steps") or [100])
        weight = steps[min(row["canary_step"] or 0, len(steps) - 1)] if row["rollout"] in actual_.CANARY_IN_PROGRESS else None
        out.append(
            {
                "id": row["id"], "name": row["name"], "generation": row["generation"], "template": row["template"],
                "environment": row["environment"], "version": row["version"], "previousVersion": row["previous_version"],
                "replicas": row["replicas"], "strategy": (row["strategy"] or {}).get("type", "AllAtOnce"),
                "state": row["state"], "rollout": row["rollout"], "weight": weight, "instances": live.get(row["id"], 0),
                "updatedAt": row["updated_at"].isoformat(), "sha": row["updated_sha"],
            }
        )  # fmt: skip
    return out


def instance(connection: sa.Connection, instance_id: str) -> dict[str, Any]:
    """One instance, every column (times as ISO 8601 text), with ``tenant_hold`` (the state its
    tenant's kill switch holds it in, if pulled) and its last ten change records (``history``)."""
    i = tables.instances
    row = connection.execute(sa.select(i).where(i.c.id == instance_id)).mappings().first()
    if row is None:
        raise errors.NotFound(f"instance {instance_id!r} does not exist")
    detail = {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
    detail["tenant_hold"] = holds.tenant_holds(connection).get(detail["tenant"])
    detail["history"] = history(connection, kind="Instance", name=instance_id, limit=10)
    return detail


def object_conditions(
    connection: sa.Connection, kind: str, tenant: str | None = None, limit: int | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """The conditions of ``kind``'s objects (AgentVersion, Deployment) by tenant and name, each
    with its kind, tenant and name; with ``limit``, those of the first ``limit`` objects that have
    any, and whether more objects have some. Objects without conditions are never decoded (on
    10,000 versions, decoding every row's conditions took ~0.2 s)."""
    c = tables.KIND_TABLES[kind].c
    query = sa.select(c.tenant, c.name, c.conditions).where(sa.cast(c.conditions, sa.Text).not_in(["[]", "null"]))
    query = query.order_by(c.tenant, c.name)
    if tenant is not None:
        query = query.where(c.tenant == tenant)
    rows = connection.execute(query if limit is None else query.limit(limit + 1)).all()
    more = limit is not None and len(rows) > limit
    found = []
    for row in rows[:limit] if more else rows:
        for condition in row.conditions or []:
            found.append({"kind": kind, "tenant": row.tenant, "name": row.name, **condition})
    return found, more


def status(
    connection: sa.Connection, runs: int = 5, tenant: str | None = None, *, first_conditions: int | None = None
) -> dict[str, Any]:
    """The fleet's status; with ``tenant``, only that tenant's objects, and runs without their
    errors (a run's errors may name any tenant's files). ``first_conditions``: only the
    conditions of the first that many versions and deployments that have any (the console's
    overview), and ``conditionedObjects``: how many of each have conditions."""
    state = fleetstate.read(connection) or {}
    r = tables.reconcile_runs.c
    last_runs = [
        {
            "id": row.id,
            "sha": row.sha,
            "ref": row.ref,
            "outcome": row.outcome,
            "actions": row.actions,
            "startedAt": row.started_at.isoformat() if row.started_at else None,
            "finishedAt": row.finished_at.isoformat() if row.finished_at else None,
            "errors": row.errors if tenant is None else [],
        }
        for row in connection.execute(sa.select(tables.reconcile_runs).order_by(r.id.desc()).limit(runs))
    ]
    conditions = []
    more = {}
    for kind in ("AgentVersion", "Deployment"):
        found, more[kind] = object_conditions(connection, kind, tenant, first_conditions)
        conditions += found

    def scoped(query: Any, table: sa.Table) -> Any:
        return query if tenant is None else query.where(table.c.tenant == tenant)

    i = tables.instances
    silent = sa.select(i.c.tenant, i.c.id, i.c.last_heartbeat).where(i.c.state == "ACTIVE", i.c.health == "UNHEALTHY")
    for row in connection.execute(scoped(silent, i).order_by(i.c.tenant, i.c.id)):
        since = f"since {row.last_heartbeat.isoformat()}" if row.last_heartbeat else "ever"
        conditions.append(
            {"kind": "Instance", "tenant": row.tenant, "name": row.id, "type": "Unhealthy", "reason": "HeartbeatMissing",
             "message": f"no heartbeat {since}"}
        )  # fmt: skip

    v = tables.agent_versions
    failed = sa.select(v.c.tenant, v.c.name).where(v.c.integrity == "FAILED", v.c.status == "ACTIVE")
    # Sorted here, not in SQL: ordered by name, SQLite walks the (tenant, name) index through every
    # version's row instead of taking the few FAILED ones from the (tenant, status, integrity) index.
    for row in sorted(connection.execute(scoped(failed, v)).all()):
        denied = sa.select(i.c.id).where(i.c.tenant == row.tenant, i.c.version == row.name, i.c.state != "RETIRED")
        ids = list(connection.execute(denied.order_by(i.c.id)).scalars())
        who = f"; every decision of its instances is denied: {', '.join(ids)}" if ids else ""
        conditions.append(
            {"kind": "AgentVersion", "tenant": row.tenant, "name": row.name, "type": "IntegrityFailed",
             "reason": "VERSION_INTEGRITY_FAILED", "message": f"its stored genome does not match its hash{who}",
             "instances": ids}
        )  # fmt: skip
    by_lifecycle = sa.select(v.c.lifecycle, sa.func.count().label("n")).where(v.c.status == "ACTIVE").group_by(v.c.lifecycle)
    lifecycles = {row.lifecycle: row.n for row in connection.execute(scoped(by_lifecycle, v))}
    by_state = sa.select(i.c.state, sa.func.count().label("n")).group_by(i.c.state)
    instances = {row.state: row.n for row in connection.execute(scoped(by_state, i))}
    a = tables.approvals
    pending = connection.execute(scoped(sa.select(sa.func.count()).select_from(a).where(a.c.status == "PENDING"), a)).scalar_one()
    # One statement for every kind's count: a round trip each made a dozen (PostgreSQL).
    per_kind = [
        scoped(sa.select(sa.literal(kind).label("kind"), sa.func.count().label("n")).select_from(table), table).where(
            table.c.status == "ACTIVE"
        )
        for kind, table in tables.KIND_TABLES.items()
    ]
    counted = {row.kind: row.n for row in connection.execute(sa.union_all(*per_kind))}
    counts = {kind: counted.get(kind, 0) for kind in tables.KIND_TABLES}
    d = tables.deployments
    rollouts = []
    in_progress = sa.select(d).where(d.c.rollout.in_(actual_.CANARY_IN_PROGRESS)).order_by(d.c.tenant, d.c.name)
    for row in connection.execute(scoped(in_progress, d)):
        steps = list(row.strategy.get("steps") or [100])
        index = min(row.canary_step or 0, len(steps) - 1)
        rollouts.append(
            {
                "tenant": row.tenant,
                "name": row.name,
                "generation": row.generation,
                "version": row.version,
                "previousVersion": row.previous_version,
                "rollout": row.rollout,
                "weight": steps[index],
                "step": index + 1,
                "steps": len(steps),
                "state": row.state,
            }
        )
    applied = state.get("applied_sha")
    revision = f"{state.get('ref')}@sha1:{applied}" if applied else None
    pending_changes = (state.get("generation") or 0) - (state.get("observed_generation") or 0)
    report = {
        "fleetConditions": fleet_conditions(revision, last_runs[0] if last_runs else None, pending_changes),
        "appliedRevision": revision,
        "appliedSha": applied,
        "appliedAt": state["applied_at"].isoformat() if state.get("applied_at") else None,
        "source": state.get("source"),
        "path": state.get("path"),
        "pendingOutOfGitChanges": pending_changes,
        "lastRuns": last_runs,
        "objects": counts,
        "versionsByLifecycle": lifecycles,
        "instancesByState": instances,
        "approvalsPending": pending,
        "rollouts": rollouts,
        "conditions": conditions,
    }
    if first_conditions is not None:
        report["moreConditions"] = more
    return report


def _condition(type_: str, status: bool, reason: str, message: str, observed: str | None) -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "observedRevision": observed}  # fmt: skip


def fleet_conditions(revision: str | None, last_run: dict[str, Any] | None, pending_changes: int) -> list[dict[str, Any]]:
    """``Ready``, ``Reconciling`` and ``Stalled``, as Flux and Argo CD users read them.

    A failed reconcile leaves the last good commit applied and served: Ready turns False and
    Stalled True (the same commit fails again until Git changes), both saying which commit
    failed and which one is still served.
    """
    failed = last_run is not None and last_run["outcome"] == "FAILED"
    failed_revision = f"{last_run['ref']}@sha1:{last_run['sha']}" if failed and last_run else None
    serving = f"; serving {revision}" if revision else "; nothing is served yet"
    if failed and last_run:
        first = (last_run["errors"] or [{}])[0]
        detail = f": {first.get('message', '')}" if first.get("message") else ""
        count = len(last_run["errors"])
        ready = _condition("Ready", False, "ReconciliationFailed", f"{failed_revision} failed{detail}{serving}", revision)
        stalled = _condition(
            "Stalled", True, "ReconciliationFailed",
            f"{failed_revision} cannot be applied{f' ({count} problem{_s(count)})' if count else ''}; fix it in Git{serving}",
            revision,
        )  # fmt: skip
    elif revision is None:
        ready = _condition("Ready", False, "NothingApplied", "no commit has been applied yet", None)
        stalled = _condition("Stalled", False, "NothingApplied", "no reconcile has failed", None)
    else:
        ready = _condition("Ready", True, "ReconciliationSucceeded", f"applied {revision}", revision)
        stalled = _condition("Stalled", False, "ReconciliationSucceeded", "the last reconcile succeeded", revision)
    if last_run is not None and last_run["outcome"] == "RUNNING":
        reconciling = _condition(
            "Reconciling", True, "Progressing", f"applying {last_run['ref']}@sha1:{last_run['sha']}", revision
        )
    elif pending_changes > 0:
        reconciling = _condition(
            "Reconciling", True, "OutOfGitChanges",
            f"{pending_changes} change(s) made outside Git (approvals, controls) wait for the next reconcile", revision,
        )  # fmt: skip
    else:
        reconciling = _condition("Reconciling", False, "UpToDate", "nothing waits for a reconcile", revision)
    return [ready, reconciling, stalled]


def history(
    connection: sa.Connection,
    *,
    sha: str | None = None,
    kind: str | None = None,
    name: str | None = None,
    type_: str | None = None,
    tenant: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Change records matching the filters, the newest ``limit`` of them (``before_id``: older
    than that record, a page further back), oldest first, times as ISO 8601 text."""
    c = tables.change_records.c
    query = sa.select(tables.change_records)
    if sha:
        query = query.where(c.sha.startswith(sha)) if len(sha) < 40 else query.where(c.sha == sha)
    if kind:
        query = query.where(c.object_kind == kind)
    if name:
        query = query.where(c.object_name == name)
    if type_:
        query = query.where(c.type == type_.upper())
    if tenant:
        query = query.where(c.tenant == tenant)
    if since:
        query = query.where(c.at >= since)
    if until:
        query = query.where(c.at < until)
    if before_id is not None:
        query = query.where(c.id < before_id)
    # Within one tenant the chain's order is the ids' order: by (tenant, seq) the tenant's newest
    # records come straight from its index, where by id all of them were read and sorted first.
    newest_first = c.seq.desc() if tenant else c.id.desc()
    query = query.order_by(newest_first).limit(limit)
    rows = [dict(row) for row in connection.execute(query).mappings()]
    rows.reverse()
    for row in rows:
        row["at"] = row["at"].isoformat()
    return rows


def describe_updates(connection: sa.Connection, plan: Any) -> None:
    """Give each update of a plan its changed fields (``action.data["changes"]``: (dotted path,
    before, after)), the stored spec and labels against the commit's: what a plan shows of an
    object it updates. Versions are left out (a genome never changes; lifecycles are steps)."""
    wanted: dict[str, list[Any]] = {}
    for action in plan.actions:
        if action.op == "update" and action.kind in tables.KIND_TABLES and action.kind != "AgentVersion":
            wanted.setdefault(action.kind, []).append(action)
    for kind, items in wanted.items():
        table = tables.KIND_TABLES[kind]
        c = table.c
        names = sorted({(a.tenant, a.name) for a in items})
        stored = {
            (r.tenant, r.name): {"spec": r.spec or {}, "labels": r.labels or {}}
            for r in connection.execute(
                sa.select(c.tenant, c.name, c.spec, c.labels).where(sa.tuple_(c.tenant, c.name).in_(names))
            )
        }
        for action in items:
            before = stored.get((action.tenant, action.name))
            after = action.after or {}
            if before is not None:
                action.data["changes"] = changed_fields(
                    before, {"spec": after.get("spec") or {}, "labels": after.get("labels") or {}}
                )


def changed_fields(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, before, after) of every leaf that differs; lists compare whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[tuple[str, Any, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}.{key}" if path else str(key)
            found += changed_fields(before.get(key), after.get(key), where)
        return found
    return [] if before == after else [(path, before, after)]


def _s(count: int) -> str:
    return "" if count == 1 else "s"
