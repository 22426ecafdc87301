"""Applying a plan: every action and its change record in the caller's one transaction.

The applier writes in bulk, grouped by table, in an order that keeps references valid (objects,
then approvals, deployment records, instances), and writes each row once with its final state:
a version created and promoted three steps in one plan is inserted at its last state, while the
chain still gets one record per step. Change records are built in plan order (so the hash chain
follows the plan) and written with one ``executemany``. Nothing here commits: the caller's
transaction makes the whole plan land or none of it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from reconciler.audit import chain as chain_
from reconciler.desired import snapshot as snapshot_
from reconciler.notifications import events, outbox
from reconciler.reconcile import actions as actions_
from reconciler.state import actual as actual_
from reconciler.state import database, tables

__all__ = ["ApplyResult", "apply"]

Action = actions_.Action

#: Plan operations that change columns of an existing (or just created) deployment record.
_RECORD_CHANGES = frozenset({"record-state", "record-replicas", "record-rollout"})


@dataclasses.dataclass
class ApplyResult:
    records: int
    approvals: dict[tuple[str, str, str, str], int]  # approval key → id, for requests made
    #: the actual state as this apply leaves it (see ``advance``)
    after: actual_.Actual | None = None


def apply(
    connection: sa.Connection,
    plan: actions_.Plan,
    desired: snapshot_.Snapshot,
    actual: actual_.Actual,
    now: dt.datetime,
    run_id: int | None = None,
) -> ApplyResult:
    # Heads read under the chain lock: other writers (approvals, decisions) append too.
    chain = chain_.Chain(chain_.locked_heads(connection, {a.tenant for a in plan.actions}), run_id)
    author = plan.author
    operator = _operator_of(desired)
    for action in plan.actions:
        chain.add(
            chain_.Record(
                tenant=action.tenant,
                type=action.record,
                object_kind=action.kind,
                object_name=action.name,
                before=action.before,
                after=action.after,
                sha=plan.sha,
                author=author,
                operator=operator,
            ),
            now,
        )
    writer = _Writer(connection, plan, desired, actual, now)
    writer.objects()
    approvals = writer.approvals()
    writer.deployments()
    writer.instances()
    writer.envelopes()
    conditions = writer.conditions(approvals)
    heads = chain.heads()
    records = chain.write(connection)
    _tell_waiting(connection, actual, conditions, now)
    after = advance(actual, plan, desired, writer, approvals, conditions, heads)
    return ApplyResult(records, approvals, after)


def advance(
    before: actual_.Actual,
    plan: actions_.Plan,
    desired: snapshot_.Snapshot,
    writer: _Writer,
    approvals: dict[tuple[str, str, str, str], int],
    conditions: dict[tuple[str, str, str], list[dict[str, Any]]],
    heads: dict[str, tuple[int, str]],
) -> actual_.Actual:
    """The actual state after ``plan`` was applied, built from the state before and the plan.

    Lets a long-lived reconciler plan its next commit without reading every row again; it is
    used only while nothing else has written since (same applied SHA and state generation),
    and the reconcile tests compare it with a fresh read after every apply.
    """
    objects = dict(before.objects)
    by_op: dict[str, list[Action]] = writer.by_op
    for action in by_op["create"] + by_op["update"]:
        obj: snapshot_.Object = action.data["object"]
        old = objects.get(obj.key)
        if obj.kind == "AgentVersion":
            objects[obj.key] = actual_.ObjectRow(
                old.id if old else -1, obj.kind, obj.tenant, obj.name, obj.doc.digest, "ACTIVE",
                writer.lifecycles.get((obj.tenant, obj.name), old.lifecycle if old else "DRAFT"),
                desired.genome_hashes[(obj.tenant, obj.name)], old.integrity if old else "OK", obj.doc.template,
                old.envelope_digest if old else None,
            )  # fmt: skip
        else:
            objects[obj.key] = actual_.ObjectRow(old.id if old else -1, obj.kind, obj.tenant, obj.name, obj.doc.digest, "ACTIVE")
    for (tenant, name), state in writer.lifecycles.items():
        key = ("AgentVersion", tenant, name)
        objects[key] = objects[key]._replace(lifecycle=state)
    for action in by_op["retire"]:
        key = (action.kind, action.tenant, action.name)
        objects[key] = objects[key]._replace(status="RETIRED")
    for (tenant, name), (_, digest) in plan.envelope_updates.items():
        key = ("AgentVersion", tenant, name)
        objects[key] = objects[key]._replace(envelope_digest=digest)
    stored = dict(before.conditions)
    for key, value in conditions.items():
        if value:
            stored[key] = value
        else:
            stored.pop(key, None)
    pending = {k: list(v) for k, v in before.approvals.items()}
    for action in by_op["request-approval"]:
        key = action.data["key"]
        pending.setdefault(key, []).append(
            actual_.ApprovalRow(
                approvals[key], key[0], key[1], key[2], key[3], action.data["required"], action.data["roles"], "PENDING", []
            )
        )
    deployments = {k: list(v) for k, v in before.deployments.items()}
    for action in by_op["deploy"]:
        r = action.data
        generation = r["generation"]
        deployments.setdefault((action.tenant, action.name), []).append(
            actual_.DeploymentRecord(
                writer.record_ids[(action.tenant, action.name, generation)], action.tenant, action.name, generation,
                r["template"], r["environment"], r["version"], r["previousVersion"], r["replicas"], r["strategy"], "PENDING",
                r.get("rollout"), r.get("canaryStep"),
            )
        )  # fmt: skip
    for action in writer.record_changes:
        records = deployments[(action.tenant, action.name)]
        for i, record in enumerate(records):
            if record.generation == action.data["generation"]:
                records[i] = record._replace(**action.data["columns"])
    instances = {k: list(v) for k, v in before.instances.items()}
    created = dict(before.instance_counts)
    final = {a.name: a.after["state"] for a in by_op["instance-state"]}
    for action in by_op["provision"]:
        r = action.data
        record_id = writer.record_id(action.tenant, r["deployment"], r["generation"])
        created[record_id] = created.get(record_id, 0) + 1
        instances.setdefault(record_id, []).append(
            actual_.InstanceRow(
                action.name,
                action.tenant,
                record_id,
                r["deployment"],
                r["version"],
                final.pop(action.name, "PROVISIONING"),
                r.get("heldBy"),
            )
        )
    if final:
        for rows in instances.values():
            for i, row in enumerate(rows):
                if row.id in final:
                    rows[i] = row._replace(state=final[row.id])
    instances = {k: sorted((r for r in v if r.state != "RETIRED"), key=lambda r: r.id) for k, v in instances.items()}
    live_records = {r.id for records in deployments.values() for r in records if r.state != "RETIRED"}
    return actual_.Actual(
        applied_sha=plan.sha,
        policy_digest=before.policy_digest,
        generation=before.generation,
        observed_generation=before.generation,
        objects=objects,
        deployments=deployments,
        instances={k: v for k, v in instances.items() if v},
        instance_counts={k: n for k, n in created.items() if k in live_records},
        approvals=pending,
        chain_heads=heads,
        conditions=stored,
        evaluations=before.evaluations,  # recorded outside Git; an apply never writes runs
        tenant_holds=before.tenant_holds,  # pulled outside Git; an apply never pulls one
    )


def _tell_waiting(
    connection: sa.Connection,
    actual: actual_.Actual,
    conditions: dict[tuple[str, str, str], list[dict[str, Any]]],
    now: dt.datetime,
) -> None:
    """``GATE_WAITING`` for each object whose stored conditions now say it waits, and did not before
    or for another reason (evidence, then an approval; an approval denied): told once when it starts
    to wait, however many reconciles it then waits through. A cold apply of a big fleet starts
    thousands waiting: the events are made only when a channel of their tenants subscribes."""
    cursor, dialect = database.driver_cursor(connection), connection.dialect.name
    if not conditions or not outbox.subscribed(cursor, dialect, "GATE_WAITING", {t for _, t, _ in conditions}):
        return
    started = []
    for (kind, tenant, name), now_stored in conditions.items():
        waiting = next((c for c in now_stored if c["type"] == "Waiting"), None)
        if waiting is None:
            continue
        before = actual.conditions.get((kind, tenant, name))
        if before and any(c["type"] == "Waiting" and c["reason"] == waiting["reason"] for c in before):
            continue
        started.append((kind, tenant, name, waiting))
    told = [
        events.Event(
            event="GATE_WAITING",
            tenant=tenant,
            object_kind=kind,
            object_name=name,
            summary=f"{kind} {name} waits: {waiting['message']}",
            details={"reason": waiting["reason"], "message": waiting["message"], "revision": waiting.get("observedRevision")},
        )
        for kind, tenant, name, waiting in started
    ]
    outbox.enqueue(cursor, dialect, told, now)


def _operator_of(desired: snapshot_.Snapshot) -> str | None:
    """The Operator whose email authored the commit, when the fleet declares one."""
    email = desired.commit.author_email.lower()
    for obj in desired.of_kind("Operator"):
        if obj.doc.email == email:
            return obj.name
    return None


class _Writer:
    def __init__(
        self,
        connection: sa.Connection,
        plan: actions_.Plan,
        desired: snapshot_.Snapshot,
        actual: actual_.Actual,
        now: dt.datetime,
    ) -> None:
        self.c = connection
        self.plan = plan
        self.desired = desired
        self.actual = actual
        self.now = now
        self.sha = plan.sha
        self.by_op: dict[str, list[Action]] = defaultdict(list)
        for action in plan.actions:
            self.by_op[action.op].append(action)
        #: changes to deployment records' columns, in plan order (later ones win)
        self.record_changes = [a for a in plan.actions if a.op in _RECORD_CHANGES]
        # Final lifecycle of each version the plan moves, so each row is written once.
        self.record_ids: dict[tuple[str, str, int], int] = {}
        self.lifecycles: dict[tuple[str, str], str] = {}
        for action in self.by_op["transition"]:
            self.lifecycles[(action.tenant, action.name)] = action.after["lifecycle"]

    # ---------------------------------------------------------------- manifest objects

    def objects(self) -> None:
        # The documents of every object written, read in one batch when the snapshot came from
        # the parse cache (which keeps no document text): not one `git cat-file` and parse per file.
        self.desired.prefetch([a.data["object"] for op in ("create", "update") for a in self.by_op[op]])
        inserts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for action in self.by_op["create"]:
            obj: snapshot_.Object = action.data["object"]
            inserts[obj.kind].append(self._row(obj) | {"created_sha": self.sha, "created_at": self.now})
        for kind, rows in inserts.items():
            database.bulk_insert(self.c, tables.KIND_TABLES[kind], rows)
        for action in self.by_op["update"]:
            obj = action.data["object"]
            table = tables.KIND_TABLES[obj.kind]
            values = self._row(obj)
            # Write-once and state columns the manifest does not set stay as they are.
            for column in (
                "tenant",
                "name",
                "genome",
                "genome_hash",
                "lifecycle",
                "integrity",
                "conditions",
                "envelope",
                "envelope_digest",
            ):
                values.pop(column, None)
            self.c.execute(table.update().where(table.c.tenant == action.tenant, table.c.name == action.name), values)
        moved = [
            {"t": tenant, "n": name, "lifecycle": state}
            for (tenant, name), state in self.lifecycles.items()
            if ("AgentVersion", tenant, name) in self.actual.objects
        ]
        if moved:
            v = tables.agent_versions
            self.c.execute(
                v.update()
                .where(v.c.tenant == sa.bindparam("t"), v.c.name == sa.bindparam("n"))
                .values(lifecycle=sa.bindparam("lifecycle"), updated_sha=self.sha, updated_at=self.now),
                moved,
            )
        for action in self.by_op["retire"]:
            table = tables.KIND_TABLES[action.kind]
            self.c.execute(
                table.update()
                .where(table.c.tenant == action.tenant, table.c.name == action.name)
                .values(status="RETIRED", updated_sha=self.sha, updated_at=self.now)
            )

    def _row(self, obj: snapshot_.Object) -> dict[str, Any]:
        data = self.desired.data(obj)
        row: dict[str, Any] = {
            "tenant": obj.tenant,
            "name": obj.name,
            "labels": data["metadata"].get("labels", {}),
            "spec": data.get("spec", {}),
            "digest": obj.doc.digest,
            "status": "ACTIVE",
            "origin": str(obj.origin),
            "updated_sha": self.sha,
            "updated_at": self.now,
        }
        if obj.kind == "Operator":
            row["email"] = obj.doc.email
        elif obj.kind == "AgentTemplate":
            row["project"] = data["spec"]["project"]
        elif obj.kind == "PolicyEnvelope":
            _, row["scope_kind"], row["scope_name"] = obj.doc.refs[0]
        elif obj.kind == "EvaluationSuite":
            row["category"] = obj.doc.facts["category"]
        elif obj.kind == "AgentVersion":
            row |= {
                "template": obj.doc.template,
                "parent": obj.doc.parent,
                "lifecycle": self.lifecycles.get((obj.tenant, obj.name), "DRAFT"),
                "desired_lifecycle": obj.doc.lifecycle,
                "genome": database.RawJSON(self.desired.genome_text(obj).decode("utf-8")),
                "genome_hash": self.desired.genome_hashes[(obj.tenant, obj.name)],
                "integrity": "OK",
                "conditions": [],
            }
        elif obj.kind == "Deployment":
            row["conditions"] = []
        return row

    # ---------------------------------------------------------------- approvals

    def approvals(self) -> dict[tuple[str, str, str, str], int]:
        requests = self.by_op["request-approval"]
        if not requests:
            return {}
        rows = []
        for action in requests:
            tenant, kind, name, transition = action.data["key"]
            rows.append(
                {
                    "tenant": tenant,
                    "subject_kind": kind,
                    "subject_name": name,
                    "transition": transition,
                    "required": action.data["required"],
                    "approver_roles": action.data["roles"],
                    "status": "PENDING",
                    "decisions": [],
                    "reason": action.reason,
                    "requested_sha": self.sha,
                    "created_at": self.now,
                }
            )
        a = tables.approvals
        ids = self.c.execute(a.insert().returning(a.c.id, sort_by_parameter_order=True), rows).scalars().all()
        return {action.data["key"]: approval_id for action, approval_id in zip(requests, ids, strict=True)}

    # ---------------------------------------------------------------- deployment records

    def deployments(self) -> None:
        d = tables.deployments
        changes: dict[tuple[str, str, int], dict[str, Any]] = defaultdict(dict)
        for action in self.record_changes:
            changes[(action.tenant, action.name, action.data["generation"])].update(action.data["columns"])
        deploys = self.by_op["deploy"]
        rows = []
        for action in deploys:
            r = action.data
            rows.append(
                {
                    "tenant": action.tenant,
                    "name": action.name,
                    "generation": r["generation"],
                    "template": r["template"],
                    "environment": r["environment"],
                    "version": r["version"],
                    "previous_version": r["previousVersion"],
                    "replicas": r["replicas"],
                    "strategy": r["strategy"],
                    "state": "PENDING",
                    "rollout": r.get("rollout"),
                    "canary_step": r.get("canaryStep"),
                    "created_sha": self.sha,
                    "updated_sha": self.sha,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
                | changes.pop((action.tenant, action.name, r["generation"]), {})
            )
        if rows:
            ids = self.c.execute(d.insert().returning(d.c.id, sort_by_parameter_order=True), rows).scalars().all()
            for action, record_id in zip(deploys, ids, strict=True):
                self.record_ids[(action.tenant, action.name, action.data["generation"])] = record_id
        for (tenant, name, generation), columns in changes.items():
            self.c.execute(
                d.update()
                .where(d.c.tenant == tenant, d.c.name == name, d.c.generation == generation)
                .values(**columns, updated_sha=self.sha, updated_at=self.now)
            )

    def record_id(self, tenant: str, name: str, generation: int) -> int:
        found = self.record_ids.get((tenant, name, generation))
        if found is not None:
            return found
        for record in self.actual.deployments.get((tenant, name), []):
            if record.generation == generation:
                return record.id
        raise KeyError(f"no deployment record {name} generation {generation}")

    # ---------------------------------------------------------------- instances

    def instances(self) -> None:
        final: dict[str, str] = {}
        for action in self.by_op["instance-state"]:
            final[action.name] = action.after["state"]
        rows = []
        for action in self.by_op["provision"]:
            r = action.data
            rows.append(
                {
                    "id": action.name,
                    "tenant": action.tenant,
                    "deployment_id": self.record_id(action.tenant, r["deployment"], r["generation"]),
                    "deployment": r["deployment"],
                    "environment": r["environment"],
                    "template": r["template"],
                    "version": r["version"],
                    "state": final.pop(action.name, "PROVISIONING"),
                    "held_by": r.get("heldBy"),
                    "health": "UNKNOWN",
                    "created_sha": self.sha,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
            )
        database.bulk_insert(self.c, tables.instances, rows)
        if final:
            i = tables.instances
            self.c.execute(
                i.update().where(i.c.id == sa.bindparam("iid")).values(state=sa.bindparam("state"), updated_at=self.now),
                [{"iid": iid, "state": state} for iid, state in final.items()],
            )

    # ---------------------------------------------------------------- effective envelopes

    def envelopes(self) -> None:
        updates = self.plan.envelope_updates
        if not updates:
            return
        v = tables.agent_versions
        self.c.execute(
            v.update()
            .where(v.c.tenant == sa.bindparam("t"), v.c.name == sa.bindparam("n"))
            .values(envelope=sa.bindparam("b_envelope"), envelope_digest=sa.bindparam("b_digest")),
            [{"t": t, "n": n, "b_envelope": envelope, "b_digest": digest} for (t, n), (envelope, digest) in updates.items()],
        )

    # ---------------------------------------------------------------- conditions

    def conditions(self, approvals: dict[tuple[str, str, str, str], int]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
        by_key = {(c.kind, c.tenant, c.name): c for c in self.plan.conditions if c.approval is not None}
        updates: dict[str, list[dict[str, Any]]] = defaultdict(list)
        written: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for (kind, tenant, name), conditions in self.plan.condition_updates.items():
            waiting = by_key.get((kind, tenant, name))
            if waiting is not None and waiting.approval in approvals:
                suffix = f" (approval {approvals[waiting.approval]})"
                conditions = [
                    c | {"message": c["message"] + suffix} if c["reason"] == "ApprovalPending" else c for c in conditions
                ]
            updates[kind].append({"t": tenant, "n": name, "conditions": conditions})
            written[(kind, tenant, name)] = conditions
        for kind, rows in updates.items():
            table = tables.KIND_TABLES[kind]
            self.c.execute(
                table.update()
                .where(table.c.tenant == sa.bindparam("t"), table.c.name == sa.bindparam("n"))
                .values(conditions=sa.bindparam("conditions")),
                rows,
            )
        return written
