"""Lineage sheets: a version's ancestry, what changed at each step, who let it through, where it ran.

``armctl version lineage NAME`` calls :func:`sheet`: the chain of parents from the template's
first version down to NAME, oldest first (and NAME's own children, by name). Each generation says:

- ``changes`` from its parent's genome (:func:`changes`, pure): the model (provider, name, each
  parameter, the fallbacks), the prompts by content hash (a prompt file is in the genome only as
  its hash), the tools granted (added, removed, configuration changed) and memory; None for the
  first version;
- ``created``: the change record that created it (when, the commit SHA and its author);
- ``steps``: every lifecycle step taken (``VERSION_TRANSITIONED``: from, to, when, commit) and
  integrity findings;
- ``approvals``: every approval request of the version, with who decided, when and why;
- ``deployments``: every deployment record that ran it: environment, generation, from when and
  until when (the record's retirement), its state.

All of it read from the store in one snapshot; the change records it cites are the hash-chained
ones ``armctl audit verify`` checks. Works beside ``evidence.scorecards`` (the version's tenant).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.evidence import scorecards
from reconciler.state import database, tables

__all__ = ["changes", "sheet"]

_STEP_TYPES = ("VERSION_CREATED", "VERSION_TRANSITIONED", "VERSION_INTEGRITY_FAILED", "VERSION_INTEGRITY_VERIFIED")


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if value is not None else None


def sheet(db: database.Engine, tenant: str | None, name: str) -> dict[str, Any]:
    """The lineage sheet of version ``name`` (see the module docstring); ``tenant`` may be None
    when one tenant has the name. ``errors.NotFound`` for an unknown version."""
    with database.reading(db) as connection:
        tenant = scorecards.tenant_of(connection, name, tenant)
        return _sheet(connection, tenant, name)


def _sheet(connection: sa.Connection, tenant: str, name: str) -> dict[str, Any]:
    v = tables.agent_versions.c
    row = connection.execute(sa.select(v.template).where(v.tenant == tenant, v.name == name)).first()
    if row is None:
        raise errors.NotFound(f"version {name!r} does not exist in tenant {tenant!r}")
    rows = {
        r.name: r
        for r in connection.execute(
            sa.select(
                v.name, v.parent, v.genome, v.genome_hash, v.lifecycle, v.status, v.integrity, v.created_at, v.created_sha
            ).where(v.tenant == tenant, v.template == row.template)
        )
    }
    ancestry = [name]
    while (parent := rows[ancestry[-1]].parent) is not None and parent in rows and parent not in ancestry:
        ancestry.append(parent)
    ancestry.reverse()
    records = _records(connection, tenant, ancestry)
    approvals = _approvals(connection, tenant, ancestry)
    deployments = _deployments(connection, tenant, ancestry)
    generations = []
    for index, member in enumerate(ancestry):
        r = rows[member]
        parent_row = rows[ancestry[index - 1]] if index > 0 else None
        created = next((x for x in records.get(member, []) if x["type"] == "VERSION_CREATED"), None)
        generations.append(
            {
                "name": member,
                "parent": parent_row.name if parent_row is not None else r.parent,
                "genomeHash": r.genome_hash,
                "lifecycle": r.lifecycle,
                "status": r.status,
                "integrity": r.integrity,
                "model": _model_line(r.genome),
                "created": {
                    "at": created["at"] if created else _iso(r.created_at),
                    "sha": created["sha"] if created else r.created_sha,
                    "author": created["author"] if created else None,
                    "record": created["seq"] if created else None,
                },
                "changes": changes(parent_row.genome, r.genome) if parent_row is not None else None,
                "steps": [x for x in records.get(member, []) if x["type"] != "VERSION_CREATED"],
                "approvals": approvals.get(member, []),
                "deployments": deployments.get(member, []),
            }
        )
    children = sorted(r.name for r in rows.values() if r.parent == name)
    return {"version": name, "tenant": tenant, "template": row.template, "ancestry": generations, "children": children}


def _model_line(genome_doc: Mapping[str, Any]) -> str:
    model = genome_doc.get("model") or {}
    return f"{model.get('provider')}/{model.get('name')}"


def _records(connection: sa.Connection, tenant: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    c = tables.change_records.c
    query = (
        sa.select(c.seq, c.object_name, c.type, c.before, c.after, c.at, c.sha, c.author, c.operator)
        .where(c.tenant == tenant, c.object_kind == "AgentVersion", c.object_name.in_(names), c.type.in_(_STEP_TYPES))
        .order_by(c.seq)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for r in connection.execute(query):
        entry: dict[str, Any] = {"seq": r.seq, "type": r.type, "at": _iso(r.at), "sha": r.sha, "author": r.author or None,
                                 "operator": r.operator}  # fmt: skip
        if r.type == "VERSION_TRANSITIONED":
            entry["from"] = (r.before or {}).get("lifecycle")
            entry["to"] = (r.after or {}).get("lifecycle")
        found.setdefault(r.object_name, []).append(entry)
    return found


def _approvals(connection: sa.Connection, tenant: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    a = tables.approvals.c
    query = (
        sa.select(a.id, a.subject_name, a.transition, a.status, a.decisions, a.created_at, a.decided_at)
        .where(a.tenant == tenant, a.subject_kind == "AgentVersion", a.subject_name.in_(names))
        .order_by(a.id)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for r in connection.execute(query):
        found.setdefault(r.subject_name, []).append(
            {
                "id": r.id,
                "transition": r.transition,
                "status": r.status,
                "requestedAt": _iso(r.created_at),
                "decidedAt": _iso(r.decided_at),
                "decisions": [{k: d.get(k) for k in ("operator", "decision", "justification", "at")} for d in r.decisions or []],
            }
        )
    return found


def _deployments(connection: sa.Connection, tenant: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    d = tables.deployments.c
    query = (
        sa.select(
            d.name,
            d.version,
            d.environment,
            d.generation,
            d.state,
            d.rollout,
            d.previous_version,
            d.created_at,
            d.updated_at,
            d.created_sha,
        )
        .where(d.tenant == tenant, d.version.in_(names))
        .order_by(d.created_at, d.name, d.generation)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for r in connection.execute(query):
        found.setdefault(r.version, []).append(
            {
                "deployment": r.name,
                "environment": r.environment,
                "generation": r.generation,
                "state": r.state,
                "rollout": r.rollout,
                "previousVersion": r.previous_version,
                "from": _iso(r.created_at),
                "until": _iso(r.updated_at) if r.state == "RETIRED" else None,
                "sha": r.created_sha,
            }
        )
    return found


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What changed in the genome from ``before`` (the parent's) to ``after``, as stored (prompts
    by content hash): ``model`` ([{field, from, to}]), ``prompts`` and ``tools`` ({added,
    removed, changed}), ``memory`` ([{field, from, to}]); empty lists where nothing changed."""
    return {
        "model": _model_changes(before.get("model") or {}, after.get("model") or {}),
        "prompts": _prompt_changes(before.get("prompts") or [], after.get("prompts") or []),
        "tools": _tool_changes(before.get("tools") or [], after.get("tools") or []),
        "memory": _field_changes("memory", before.get("memory") or {}, after.get("memory") or {}),
    }


def _field_changes(prefix: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"field": f"{prefix}.{key}", "from": before.get(key), "to": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def _model_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = [
        {"field": f"model.{key}", "from": before.get(key), "to": after.get(key)}
        for key in ("provider", "name")
        if before.get(key) != after.get(key)
    ]
    found += _field_changes("model.parameters", before.get("parameters") or {}, after.get("parameters") or {})

    def fallbacks(model: Mapping[str, Any]) -> list[str]:
        return [f"{f.get('provider')}/{f.get('name')}" for f in model.get("fallbacks") or []]

    if fallbacks(before) != fallbacks(after):
        found.append({"field": "model.fallbacks", "from": fallbacks(before), "to": fallbacks(after)})
    return found


def _prompt_changes(before: list[Mapping[str, Any]], after: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    def keyed(prompts: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
        return [(p.get("role", "system"), str(p.get("contentHash"))) for p in prompts]

    old, new = keyed(before), keyed(after)
    added = [{"role": role, "contentHash": h} for role, h in new if (role, h) not in old]
    removed = [{"role": role, "contentHash": h} for role, h in old if (role, h) not in new]
    # A role whose one prompt was replaced is a change of that prompt, not an add and a remove.
    changed = []
    for role in sorted({p["role"] for p in added} & {p["role"] for p in removed}):
        was = [p for p in removed if p["role"] == role]
        now = [p for p in added if p["role"] == role]
        if len(was) == 1 and len(now) == 1:
            changed.append({"role": role, "from": was[0]["contentHash"], "to": now[0]["contentHash"]})
            removed.remove(was[0])
            added.remove(now[0])
    return {"added": added, "removed": removed, "changed": changed}


def _tool_changes(before: list[Mapping[str, Any]], after: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    old = {t["name"]: t.get("config") or {} for t in before}
    new = {t["name"]: t.get("config") or {} for t in after}
    return {
        "added": [name for name in new if name not in old],
        "removed": [name for name in old if name not in new],
        "changed": [{"name": name, "from": old[name], "to": new[name]} for name in new if name in old and old[name] != new[name]],
    }
