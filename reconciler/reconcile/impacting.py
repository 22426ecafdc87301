"""The two sides of a decision impact: a commit's policy, and the database's.

``policy.impact`` compares what decides tool calls on two sides; this module builds a side
(:class:`policy.impact.Side`) from a validated snapshot (the base or head commit of a pull
request; the head of ``armctl replay``) or from what the database applied (a plain ``armctl
plan``, and the apply that governs widening changes). Envelopes are computed by the planner's
own code (``context.version_envelope``) and catalogs read as the decider reads them (the first
catalog by name declaring a tool wins), so a side decides as the applied commit would.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from reconciler.desired import snapshot as snapshot_
from reconciler.policy import engines, impact
from reconciler.reconcile import actions, context
from reconciler.state import actual as actual_
from reconciler.state import fleetstate, tables

__all__ = ["side_of_database", "side_of_snapshot"]


def side_of_snapshot(snap: snapshot_.Snapshot) -> impact.Side:
    """What decides tool calls once ``snap`` is applied."""
    plan = actions.Plan(revision=snap.revision, sha=snap.commit.sha, author="")
    snap.prefetch([o for kind in ("ToolCatalog", "Environment", "Deployment", "Tenant") for o in snap.of_kind(kind)])
    ctx = context.Context(snap, actual_.Actual(), engines.EmbeddedEngine(), plan)
    envelopes: dict[tuple[str, str], Any] = {}
    templates: dict[tuple[str, str], str] = {}
    lifecycles: dict[tuple[str, str], str] = {}
    for obj in snap.of_kind("AgentVersion"):
        key = (obj.tenant, obj.name)
        envelopes[key] = context.version_envelope(ctx, obj)
        templates[key] = obj.doc.template or ""
        lifecycles[key] = obj.doc.lifecycle or "DRAFT"
    tools: dict[str, dict[str, Any]] = {}
    for catalog in sorted(snap.of_kind("ToolCatalog"), key=lambda o: (o.tenant, o.name)):
        for entry in (snap.data(catalog).get("spec") or {}).get("tools", []):
            tools.setdefault(catalog.tenant, {}).setdefault(entry["name"], entry)
    production = {
        (env.tenant, env.name): bool((snap.data(env).get("spec") or {}).get("production")) for env in snap.of_kind("Environment")
    }
    placements: dict[tuple[str, str], set[str]] = {}
    for deployment in snap.of_kind("Deployment"):
        spec = snap.data(deployment).get("spec") or {}
        if spec.get("replicas", 1) and spec.get("version") and spec.get("environment"):
            placements.setdefault((deployment.tenant, spec["version"]), set()).add(spec["environment"])
    rules = {}
    for tenant in snap.of_kind("Tenant"):
        widening = ((snap.data(tenant).get("spec") or {}).get("policyChanges") or {}).get("widening")
        if widening:
            rules[tenant.name] = widening
    projects = {
        (t.tenant, t.name): project
        for t in snap.of_kind("AgentTemplate")
        for project in [next((name for _, kind, name in t.doc.refs if kind == "Project"), None)]
        if project
    }
    return impact.Side(
        snap.revision,
        dict(snap.rego),
        envelopes,
        templates,
        lifecycles,
        tools,
        production,
        {k: frozenset(v) for k, v in placements.items()},
        rules,
        projects,
    )


def side_of_database(connection: sa.Connection) -> impact.Side:
    """What decides tool calls now: the applied commit's policy as the database holds it."""
    state = fleetstate.read(connection) or {}
    v, t, e, i = tables.agent_versions.c, tables.tool_catalogs.c, tables.environments.c, tables.instances.c
    envelopes: dict[tuple[str, str], Any] = {}
    templates: dict[tuple[str, str], str] = {}
    lifecycles: dict[tuple[str, str], str] = {}
    query = sa.select(v.tenant, v.name, v.envelope, v.template, v.lifecycle).where(v.status == "ACTIVE")
    row: Any
    for row in connection.execute(query):
        if row.envelope is not None:
            key = (row.tenant, row.name)
            envelopes[key], templates[key], lifecycles[key] = row.envelope, row.template or "", row.lifecycle
    tools: dict[str, dict[str, Any]] = {}
    for row in connection.execute(sa.select(t.tenant, t.spec).where(t.status == "ACTIVE").order_by(t.tenant, t.name)):
        for entry in (row.spec or {}).get("tools", []):
            tools.setdefault(row.tenant, {}).setdefault(entry["name"], entry)
    production = {
        (row.tenant, row.name): bool((row.spec or {}).get("production"))
        for row in connection.execute(sa.select(e.tenant, e.name, e.spec).where(e.status == "ACTIVE"))
    }
    placements: dict[tuple[str, str], set[str]] = {}
    running = sa.select(i.tenant, i.version, i.environment).where(i.state != "RETIRED").distinct()
    for row in connection.execute(running):
        placements.setdefault((row.tenant, row.version), set()).add(row.environment)
    c = tables.policy_modules.c
    rego = {row.path: row.text for row in connection.execute(sa.select(c.path, c.text))}
    rules = {}
    tn = tables.tenants.c
    for row in connection.execute(sa.select(tn.name, tn.spec).where(tn.status == "ACTIVE")):
        widening = ((row.spec or {}).get("policyChanges") or {}).get("widening")
        if widening:
            rules[row.name] = widening
    tp = tables.agent_templates.c
    projects = {
        (row.tenant, row.name): row.project
        for row in connection.execute(sa.select(tp.tenant, tp.name, tp.project).where(tp.status == "ACTIVE"))
    }
    revision = f"applied@sha1:{state.get('applied_sha')}" if state.get("applied_sha") else "nothing applied"
    return impact.Side(
        revision,
        rego,
        envelopes,
        templates,
        lifecycles,
        tools,
        production,
        {k: frozenset(v) for k, v in placements.items()},
        rules,
        projects,
    )
