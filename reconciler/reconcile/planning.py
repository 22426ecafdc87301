"""The plan: ``plan(desired, actual)`` → ordered actions, conditions and refusals. No I/O.

For every manifest kind it compares the commit's objects with the database rows: new objects are
created, changed ones updated (a version's genome never: that is a refusal naming the file),
missing ones retired (prune; rows are never deleted). Versions then walk one legal lifecycle
step at a time towards the state their manifest asks for, each step allowed by its gate (Rego,
asked once for the whole plan through ``policy.gating``); the first step a gate holds back
leaves the version waiting with a condition, and an approval request when the gate needs one.
Deployments and instances are planned in ``deploying`` once the versions' outcome is known.

The only inputs besides the two states are the policy engine for the gates, which is pure
evaluation, and, for canary rollouts, whether they may advance and their instances' health; so
plans are table-tested without a database.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from reconciler.desired import genome, kinds
from reconciler.desired import snapshot as snapshot_
from reconciler.lifecycle import machines
from reconciler.policy import engines, gating
from reconciler.reconcile import actions as actions_
from reconciler.reconcile import context, deploying, evidencing
from reconciler.state import actual as actual_

__all__ = ["plan"]

Action = actions_.Action
Condition = actions_.Condition


#: Kinds whose objects feed the gates (roles and operators for approvals, environments for
#: admission, envelopes and the template → project links for approval requirements, suites and
#: template labels for evidence). Evaluation runs are recorded outside Git and bump the state
#: generation, which unsettles the gates as well.
_GATE_INPUT_KINDS = ("Role", "Operator", "Environment", "PolicyEnvelope", "AgentTemplate", "Project", "EvaluationSuite")


def plan(
    desired: snapshot_.Snapshot,
    actual: actual_.Actual,
    engine: engines.Engine,
    policy_digest: str = "",
    *,
    advance: bool = True,
    health: dict[str, str] | None = None,
) -> actions_.Plan:
    """The ordered actions that move ``actual`` to ``desired``, and why anything waits.

    ``advance`` lets canary rollouts in progress take their next step, judged by ``health``
    (instance id → health of their instances); without it they stay where they are.
    """
    result = actions_.Plan(
        revision=desired.revision, sha=desired.commit.sha, author=_author(desired), warnings=list(desired.warnings)
    )
    ctx = context.Context(desired, actual, engine, result, advance=advance, health=health or {})
    ctx.gates_settled = _gates_settled(desired, actual, policy_digest)
    for kind in ("Tenant", "Project", "Environment", "Role", "Operator", "ToolCatalog", "AgentTemplate", "EvaluationSuite"):
        context.plan_objects(ctx, kind)
    _plan_versions(ctx)
    context.plan_objects(ctx, "PolicyEnvelope")
    _plan_effective_envelopes(ctx)
    deploying.plan_deployments(ctx)
    context.plan_objects(ctx, "NotificationChannel")
    _plan_prunes(ctx)
    _plan_condition_updates(ctx)
    return result


def _gates_settled(desired: snapshot_.Snapshot, actual: actual_.Actual, policy_digest: str) -> bool:
    """Whether every gate input but the objects' own documents is as at the last apply.

    Then a version or deployment that waits, and whose own document did not change, would get
    the same gate result again: its stored condition is kept and its gate is not evaluated. This
    is what keeps a commit that touches a few files cheap in a fleet with thousands waiting.
    """
    if not policy_digest or actual.policy_digest != policy_digest or actual.generation != actual.observed_generation:
        return False
    return all(_unchanged(desired, actual, kind) for kind in _GATE_INPUT_KINDS)


def _unchanged(desired: snapshot_.Snapshot, actual: actual_.Actual, kind: str) -> bool:
    """Whether every object of ``kind`` is in the database as the commit declares it."""
    return {(o.tenant, o.name, o.doc.digest) for o in desired.of_kind(kind)} == actual.active_digests(kind)


def _author(desired: snapshot_.Snapshot) -> str:
    c = desired.commit
    return f"{c.author_name} <{c.author_email}>"


# ------------------------------------------------------------------ versions


def _plan_versions(ctx: context.Context) -> None:
    desired, actual = ctx.desired, ctx.actual
    walks: list[tuple[snapshot_.Object, str, list[str]]] = []
    for obj in desired.of_kind("AgentVersion"):
        row = actual.objects.get(obj.key)
        computed = desired.genome_hashes[(obj.tenant, obj.name)]
        if row is None:
            after = context.spec_of(desired, obj) | {"genomeHash": computed, "lifecycle": "DRAFT"}
            ctx.add(
                Action(
                    op="create",
                    kind="AgentVersion",
                    tenant=obj.tenant,
                    name=obj.name,
                    record="VERSION_CREATED",
                    before=None,
                    after=after,
                    data=context.row_data(obj),
                )
            )
            current = "DRAFT"
        else:
            if row.genome_hash != computed:
                ctx.result.problems.append(
                    obj.origin.problem(
                        "spec.genome",
                        f"the genome of {obj.name} is write-once: it is stored as {row.genome_hash} and this commit hashes to "
                        f"{computed}; declare a new version with 'parent: {obj.name}' instead",
                    )
                )
                continue
            if row.digest != obj.doc.digest or row.status != "ACTIVE":
                before = {"digest": row.digest} | ({"status": row.status} if row.status != "ACTIVE" else {})
                ctx.add(
                    Action(
                        op="update",
                        kind="AgentVersion",
                        tenant=obj.tenant,
                        name=obj.name,
                        record="VERSION_UPDATED",
                        before=before,
                        after=context.spec_of(desired, obj),
                        data=context.row_data(obj, row.id),
                    )
                )
            current = row.lifecycle or "DRAFT"
        target = obj.doc.lifecycle or "DRAFT"
        if row is not None and current != target and context.keep_waiting(ctx, "AgentVersion", obj):
            ctx.version_states[(obj.tenant, obj.name)] = current
            continue
        try:
            steps = machines.VERSION.path(current, target)
        except machines.IllegalTransition as exc:
            ctx.result.problems.append(obj.origin.problem("spec.lifecycle", f"{obj.name}: {exc}"))
            ctx.version_states[(obj.tenant, obj.name)] = current
            continue
        if steps:
            walks.append((obj, current, steps))
        else:
            ctx.version_states[(obj.tenant, obj.name)] = current
    _walk_versions(ctx, walks)


def _walk_versions(ctx: context.Context, walks: list[tuple[snapshot_.Object, str, list[str]]]) -> None:
    """Take each version's steps in order while its gates allow them (one gate evaluation)."""
    gate_steps: dict[str, dict[str, Any]] = {}
    for obj, current, steps in walks:
        state = current
        for target in steps:
            if target in ("CANDIDATE", "APPROVED"):
                step = _version_step(ctx, obj, state, target)
                gate_steps[step["id"]] = step
            state = target
    results = gating.evaluate(ctx.engine, list(gate_steps.values()))
    for obj, current, steps in walks:
        state = current
        for target in steps:
            step_id = _step_id(obj, state, target)
            gate = results.get(step_id)
            if gate is not None and not gate["allowed"]:
                step = gate_steps[step_id]
                approval = (_approval_key(obj, state, target), step["requirement"]) if "requirement" in step else None
                context.wait_for_gate(ctx, "AgentVersion", obj.tenant, obj.name, (state, target), gate, approval)
                break
            ctx.add(
                Action(
                    op="transition",
                    kind="AgentVersion",
                    tenant=obj.tenant,
                    name=obj.name,
                    record="VERSION_TRANSITIONED",
                    before={"lifecycle": state},
                    after={"lifecycle": target},
                )
            )
            state = target
        ctx.version_states[(obj.tenant, obj.name)] = state


def _step_id(obj: snapshot_.Object, state: str, target: str) -> str:
    return f"AgentVersion/{obj.tenant}/{obj.name}/{state}->{target}"


def _approval_key(obj: snapshot_.Object, state: str, target: str) -> tuple[str, str, str, str]:
    return (obj.tenant, "AgentVersion", obj.name, f"{state}->{target}")


def _version_step(ctx: context.Context, obj: snapshot_.Object, state: str, target: str) -> dict[str, Any]:
    row = ctx.actual.objects.get(obj.key)
    step: dict[str, Any] = {
        "id": _step_id(obj, state, target),
        "kind": "AgentVersion",
        "from": state,
        "to": target,
        "version": {
            "name": obj.name,
            "template": obj.doc.template,
            "lifecycle": state,
            "integrity": (row.integrity if row else None) or "OK",
        },
        "evidence": evidencing.for_version_step(ctx, obj, state, target),
    }
    if target == "APPROVED":
        envelope = context.version_envelope(ctx, obj)
        roles = envelope["approvals"]["approverRoles"] or ctx.default_approver_roles(obj.tenant)
        required = envelope["approvals"]["requiredApprovals"] or 1
        decisions, _ = ctx.approvals_input(_approval_key(obj, state, target))
        step["requirement"] = {"required": required, "roles": roles}
        step["approvals"] = decisions
    return step


# ------------------------------------------------------------------ prune and conditions


def _plan_effective_envelopes(ctx: context.Context) -> None:
    """Each version's effective envelope, where it differs from the stored one.

    When no envelope, template, project or tenant changed, a stored envelope is still right:
    only new versions (and versions without one) are computed.
    """
    settled = all(_unchanged(ctx.desired, ctx.actual, kind) for kind in ("PolicyEnvelope", "AgentTemplate", "Project", "Tenant"))
    digests: dict[int, str] = {}  # versions sharing a scope chain share one envelope object
    for obj in ctx.desired.of_kind("AgentVersion"):
        if settled:
            row = ctx.actual.objects.get(obj.key)
            if row is not None and row.envelope_digest is not None:
                continue
        envelope = context.version_envelope(ctx, obj)
        digest = digests.get(id(envelope))
        if digest is None:
            digest = digests[id(envelope)] = genome.sha256_of(genome.canonical_json(envelope))
        row = ctx.actual.objects.get(obj.key)
        if row is None or row.envelope_digest != digest:
            ctx.result.envelope_updates[(obj.tenant, obj.name)] = (envelope, digest)


def _plan_prunes(ctx: context.Context) -> None:
    desired = ctx.desired
    gone: dict[str, list[actual_.ObjectRow]] = defaultdict(list)
    for key, row in ctx.actual.objects.items():
        if row.status == "ACTIVE" and key not in desired.objects:
            gone[key[0]].append(row)
    # Dependants before what they depend on: deployments first, tenants last.
    for kind in reversed(kinds.KIND_NAMES):
        for row in gone.get(kind, []):
            if kind == "Deployment":
                deploying.plan_removal(ctx, row.tenant, row.name)
            ctx.add(
                Action(
                    op="retire",
                    kind=kind,
                    tenant=row.tenant,
                    name=row.name,
                    record=actions_.RETIRED[kind],
                    before={"status": "ACTIVE"},
                    after={"status": "RETIRED"},
                    data={"id": row.id},
                )
            )


def _plan_condition_updates(ctx: context.Context) -> None:
    """Conditions to store on version and deployment rows where they differ from the stored ones."""
    wanted: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in ctx.result.conditions:
        wanted[(c.kind, c.tenant, c.name)].append(
            {"type": c.type, "status": "True", "reason": c.reason, "message": c.message, "observedRevision": ctx.desired.revision}
        )
    stored = ctx.actual.conditions
    for key in set(wanted) | {k for k, v in stored.items() if v}:
        new = wanted.get(key, [])
        old = stored.get(key, [])
        if _strip_revision(new) != _strip_revision(old):
            ctx.result.condition_updates[key] = new


def _strip_revision(conditions: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((c["type"], c["reason"], c["message"]) for c in conditions)
