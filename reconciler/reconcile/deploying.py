"""Planning deployments and their instances, once the versions' outcome is known.

A Deployment manifest is *declared* (its row in ``deployment_specs``); what runs is a deployment
*record* per version it has been moved to. Moving ``spec.version`` (or the environment or
template) makes a new record when the environment's admission gate allows the version:
``DEPLOYMENT_CREATED`` (with ``previousVersion``) and ``DEPLOYMENT_ACTIVATED``. With
``AllAtOnce`` the new record gets ``replicas`` instances and the old record is retired, its
instances drained then retired; with ``Canary`` the new record takes over step by step (see
``rolling``). Moving back to the version the current record replaced (a ``git revert``) rolls
back at once: the current record goes ``ACTIVE → ROLLING_BACK`` (``DEPLOYMENT_ROLLED_BACK``)
before it retires, without waiting for an approval the environment requires (it ran that
version just before). Instances held by an emergency control are never touched; they are reported
as held drift, and once released they converge to Git on the next reconcile. The moves themselves (record states, instances) are in ``provisioning``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconciler.policy import gating
from reconciler.reconcile import actions as actions_
from reconciler.reconcile import context, evidencing, provisioning, rolling
from reconciler.state import actual as actual_

__all__ = ["plan_deployments", "plan_removal"]

Action = actions_.Action
Record = actual_.DeploymentRecord


@dataclasses.dataclass(frozen=True)
class DeploySpec:
    """What a Deployment manifest asks for, read from its document summary (no model needed)."""

    template: str
    environment: str
    version: str
    replicas: int
    strategy: dict[str, Any]

    @classmethod
    def of(cls, obj: Any) -> DeploySpec:
        facts = obj.doc.facts
        return cls(obj.doc.template, facts["environment"], obj.doc.version, facts["replicas"], facts["strategy"])


def plan_deployments(ctx: context.Context) -> None:
    context.plan_objects(ctx, "Deployment")
    steps: dict[str, dict[str, Any]] = {}
    pending: list[tuple[Any, list[actual_.DeploymentRecord], Record | None, Record | None, int, str]] = []
    for obj in ctx.desired.of_kind("Deployment"):
        spec = DeploySpec.of(obj)
        live = ctx.actual.live_deployments(obj.tenant, obj.name)
        current = live[-1] if live else None
        canary = current if rolling.in_progress(current) else None
        stable = live[-2] if canary is not None and len(live) > 1 else None
        if current is not None and _serves(current, spec):
            if canary is not None:
                rolling.plan_canary(ctx, spec.replicas, canary, stable)
            else:
                _plan_scale(ctx, current, spec.replicas)
            continue
        if canary is not None and stable is not None and _serves(stable, spec):
            rolling.plan_revert(ctx, spec.replicas, canary, stable)
            continue
        if rolling.keep_rolled_back(ctx, obj.tenant, obj.name, spec.version, spec.environment, spec.template):
            _hold(ctx, live)
            continue
        version_row = ctx.actual.objects.get(("AgentVersion", obj.tenant, spec.version))
        version_moved = version_row is None or ctx.version_states.get((obj.tenant, spec.version)) != version_row.lifecycle
        if not version_moved and context.keep_waiting(ctx, "Deployment", obj):
            _hold(ctx, live)
            continue
        base = stable if canary is not None else current
        records = ctx.actual.deployments.get((obj.tenant, obj.name), [])
        generation = (records[-1].generation if records else 0) + 1
        step_id = f"Deployment/{obj.tenant}/{obj.name}/g{generation}"
        steps[step_id] = _deployment_step(ctx, obj, spec, base, generation, step_id)
        pending.append((obj, live, base, canary, generation, step_id))
    results = gating.evaluate(ctx.engine, list(steps.values()))
    for obj, live, base, canary, generation, step_id in pending:
        gate = results[step_id]
        spec = DeploySpec.of(obj)
        if not gate["allowed"]:
            step = steps[step_id]
            approval = (
                (_approval_key(obj.tenant, obj.name, base, generation, spec.version), step["requirement"])
                if "requirement" in step
                else None
            )
            before = base.version if base else "none"
            context.wait_for_gate(ctx, "Deployment", obj.tenant, obj.name, (before, spec.version), gate, approval)
            _hold(ctx, live)
            continue
        _plan_new_record(ctx, obj, spec, base, canary, generation)
    provisioning.converge_released(ctx)


def _serves(record: actual_.DeploymentRecord, spec: DeploySpec) -> bool:
    """Whether a record runs what the manifest asks for."""
    return (record.version, record.environment, record.template) == (spec.version, spec.environment, spec.template)


def _rolls_back(record: actual_.DeploymentRecord | None, spec: DeploySpec) -> bool:
    """Whether ``spec`` moves ``record`` back to the version it replaced, in the same
    environment and template."""
    return (
        record is not None
        and record.previous_version == spec.version
        and (record.environment, record.template) == (spec.environment, spec.template)
    )


def _hold(ctx: context.Context, live: list[actual_.DeploymentRecord]) -> None:
    """While a Deployment waits (a gate, a rolled-back version), what runs stays as it is."""
    if not live:
        return
    current = live[-1]
    if rolling.in_progress(current):
        rolling.hold(ctx, current, live[-2] if len(live) > 1 else None)
    else:
        _plan_scale(ctx, current, current.replicas)


def _deployment_step(
    ctx: context.Context, obj: Any, spec: Any, current: actual_.DeploymentRecord | None, generation: int, step_id: str
) -> dict[str, Any]:
    env_obj = ctx.desired.get("Environment", obj.tenant, spec.environment)
    assert env_obj is not None  # references were checked when the commit was loaded
    env = env_obj.doc.facts
    version_row = ctx.actual.objects.get(("AgentVersion", obj.tenant, spec.version))
    step: dict[str, Any] = {
        "id": step_id,
        "kind": "Deployment",
        "from": current.state if current else "NONE",
        "to": "ACTIVE",
        "version": {
            "name": spec.version,
            "template": spec.template,
            "lifecycle": ctx.version_states.get((obj.tenant, spec.version), "DRAFT"),
            "integrity": (version_row.integrity if version_row else None) or "OK",
        },
        "environment": {"name": spec.environment, "admission": {"minLifecycle": env["minLifecycle"]}},
        "evidence": evidencing.for_deployment(ctx, obj.tenant, spec.template, spec.version, spec.environment),
    }
    if env["requireApproval"] and not _rolls_back(current, spec):
        # A rollback (a `git revert`) returns to the version this environment ran just before:
        # it happens at once, never waiting on a human, whatever the environment requires.
        key = _approval_key(obj.tenant, obj.name, current, generation, spec.version)
        decisions, _ = ctx.approvals_input(key)
        roles = list(env["approverRoles"]) or ctx.default_approver_roles(obj.tenant)
        step["requirement"] = {"required": env["requiredApprovals"], "roles": roles}
        step["approvals"] = decisions
    return step


def _approval_key(
    tenant: str, name: str, current: actual_.DeploymentRecord | None, generation: int, version: str
) -> tuple[str, str, str, str]:
    before = current.version if current else "none"
    return (tenant, "Deployment", name, f"generation {generation}: {before} -> {version}")


def _plan_new_record(
    ctx: context.Context,
    obj: Any,
    spec: DeploySpec,
    base: actual_.DeploymentRecord | None,
    superseded: actual_.DeploymentRecord | None,
    generation: int,
) -> None:
    """A record for the new version: all at once, or the first step of a canary.

    ``base`` is the record that runs the Deployment (the previous one of a canary still in
    progress, which is then ``superseded``: retired before it completed).
    """
    tenant, name = obj.tenant, obj.name
    previous = base.version if base else None
    rollback = base is not None and base.previous_version == spec.version
    # Going back to the version just replaced (a `git revert`) is a rollback: at once, no steps.
    canary = not rollback and rolling.wants_canary(spec.strategy, base, spec.replicas)
    record: dict[str, Any] = {
        "generation": generation,
        "template": spec.template,
        "environment": spec.environment,
        "version": spec.version,
        "previousVersion": previous,
        "replicas": spec.replicas,
        "strategy": spec.strategy,
    }
    if canary:
        record |= {"rollout": rolling.PROGRESSING, "canaryStep": 0}
    ctx.add(
        Action(
            op="deploy",
            kind="Deployment",
            tenant=tenant,
            name=name,
            record="DEPLOYMENT_CREATED",
            before={"version": previous},
            after=record | {"state": "PENDING"},
            data=record,
        )
    )
    if base is not None and rollback:
        provisioning.record_state(
            ctx, tenant, name, "DEPLOYMENT_ROLLED_BACK", base.generation, base.state, "ROLLING_BACK", base.version, spec.version
        )
    provisioning.record_state(ctx, tenant, name, "DEPLOYMENT_ACTIVATED", generation, "PENDING", "ACTIVE", None, spec.version)
    new = actual_.DeploymentRecord(
        -1, tenant, name, generation, spec.template, spec.environment, spec.version, previous, spec.replicas,
        spec.strategy, "ACTIVE", record.get("rollout"), record.get("canaryStep"),
    )  # fmt: skip
    if canary:
        assert base is not None
        rolling.first_step(ctx, new, base)
    else:
        provisioning.scale_to(ctx, new, spec.replicas)
        if base is not None:
            provisioning.retire_record(ctx, base, "ROLLING_BACK" if rollback else base.state)
    if superseded is not None:
        provisioning.retire_record(ctx, superseded, superseded.state)


def _plan_scale(ctx: context.Context, current: actual_.DeploymentRecord, replicas: int) -> None:
    provisioning.report_held(ctx, current)
    provisioning.resize(ctx, current, replicas)


def plan_removal(ctx: context.Context, tenant: str, name: str) -> None:
    """A Deployment manifest was removed: retire its records (a canary's two) and drain their instances."""
    for record in reversed(ctx.actual.live_deployments(tenant, name)):
        provisioning.retire_record(ctx, record, record.state)
