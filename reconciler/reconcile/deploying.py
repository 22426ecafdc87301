"""Planning deployments and their instances, once the versions' outcome is known.

A Deployment manifest is *declared* (its row in ``deployment_specs``); what runs is a deployment
*record* per version it has been moved to. Moving ``spec.version`` (or the environment or
template) makes a new record when the environment's admission gate allows the version:
``DEPLOYMENT_CREATED`` (with ``previousVersion``), ``DEPLOYMENT_ACTIVATED``, the old record
retired, ``replicas`` instances provisioned for the new record and the old ones drained then
retired. Moving back to the version the current record replaced (a ``git revert``) rolls back:
the current record goes ``ACTIVE → ROLLING_BACK`` (``DEPLOYMENT_ROLLED_BACK``) before it retires.
Instances held by an emergency control are never touched; they are reported as held drift.

The ``Canary`` strategy is applied all at once here; stepping through weights needs the daemon.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconciler.lifecycle import machines
from reconciler.policy import gating
from reconciler.reconcile import actions as actions_
from reconciler.reconcile import context
from reconciler.state import actual as actual_

__all__ = ["plan_deployments", "plan_removal"]

Action = actions_.Action
Condition = actions_.Condition


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
    pending: list[tuple[Any, actual_.DeploymentRecord | None, int, str]] = []
    for obj in ctx.desired.of_kind("Deployment"):
        spec = DeploySpec.of(obj)
        current = ctx.actual.current_deployment(obj.tenant, obj.name)
        if current is not None and (current.version, current.environment, current.template) == (
            spec.version,
            spec.environment,
            spec.template,
        ):
            _plan_scale(ctx, obj.tenant, obj.name, current, spec.replicas)
            continue
        version_row = ctx.actual.objects.get(("AgentVersion", obj.tenant, spec.version))
        version_moved = version_row is None or ctx.version_states.get((obj.tenant, spec.version)) != version_row.lifecycle
        if not version_moved and context.keep_waiting(ctx, "Deployment", obj):
            if current is not None:
                _plan_scale(ctx, obj.tenant, obj.name, current, current.replicas)
            continue
        records = ctx.actual.deployments.get((obj.tenant, obj.name), [])
        generation = (records[-1].generation if records else 0) + 1
        step_id = f"Deployment/{obj.tenant}/{obj.name}/g{generation}"
        steps[step_id] = _deployment_step(ctx, obj, spec, current, generation, step_id)
        pending.append((obj, current, generation, step_id))
    results = gating.evaluate(ctx.engine, list(steps.values()))
    for obj, current, generation, step_id in pending:
        gate = results[step_id]
        spec = DeploySpec.of(obj)
        if not gate["allowed"]:
            step = steps[step_id]
            approval = (
                (_approval_key(obj.tenant, obj.name, current, generation, spec.version), step["requirement"])
                if "requirement" in step
                else None
            )
            before = current.version if current else "none"
            context.wait_for_gate(ctx, "Deployment", obj.tenant, obj.name, (before, spec.version), gate, approval)
            if current is not None:
                _plan_scale(ctx, obj.tenant, obj.name, current, current.replicas)
            continue
        _plan_new_record(ctx, obj, spec, current, generation)


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
            "lifecycle": ctx.version_states.get((obj.tenant, spec.version), "DRAFT"),
            "integrity": (version_row.integrity if version_row else None) or "OK",
        },
        "environment": {"name": spec.environment, "admission": {"minLifecycle": env["minLifecycle"]}},
    }
    if env["requireApproval"]:
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
    ctx: context.Context, obj: Any, spec: Any, current: actual_.DeploymentRecord | None, generation: int
) -> None:
    tenant, name = obj.tenant, obj.name
    previous = current.version if current else None
    rollback = current is not None and current.previous_version == spec.version
    record = {
        "generation": generation,
        "template": spec.template,
        "environment": spec.environment,
        "version": spec.version,
        "previousVersion": previous,
        "replicas": spec.replicas,
        "strategy": spec.strategy,
    }
    ctx.add(
        Action(
            "deploy",
            "Deployment",
            tenant,
            name,
            "DEPLOYMENT_CREATED",
            {"version": previous},
            record | {"state": "PENDING"},
            data=record,
        )
    )
    if current is not None and rollback:
        _record_state(
            ctx,
            tenant,
            name,
            "DEPLOYMENT_ROLLED_BACK",
            current.generation,
            current.state,
            "ROLLING_BACK",
            current.version,
            spec.version,
        )
    _record_state(ctx, tenant, name, "DEPLOYMENT_ACTIVATED", generation, "PENDING", "ACTIVE", None, spec.version)
    activation = _activation(ctx, tenant, spec.environment)
    for ordinal in range(spec.replicas):
        _provision(ctx, tenant, name, generation, ordinal, spec, activation)
    if current is not None:
        _retire_record(ctx, current, "ROLLING_BACK" if rollback else current.state)


def _record_state(
    ctx: context.Context,
    tenant: str,
    name: str,
    record_type: str,
    generation: int,
    state: str,
    target: str,
    version_before: str | None = None,
    version_after: str | None = None,
) -> None:
    """One legal step of a deployment record, with its change record."""
    machines.DEPLOYMENT.check(state, target)
    before: dict[str, Any] = {"generation": generation, "state": state}
    after: dict[str, Any] = {"generation": generation, "state": target}
    if version_before is not None:
        before["version"] = version_before
    if version_after is not None:
        after["version"] = version_after
    ctx.add(
        Action(
            "record-state",
            "Deployment",
            tenant,
            name,
            record_type,
            before,
            after,
            data={"generation": generation, "state": target},
        )
    )


def _retire_record(ctx: context.Context, record: actual_.DeploymentRecord, state: str) -> None:
    _record_state(ctx, record.tenant, record.name, "DEPLOYMENT_RETIRED", record.generation, state, "RETIRED")
    for instance in ctx.actual.instances.get(record.id, []):
        _drain(ctx, instance)


def _activation(ctx: context.Context, tenant: str, environment: str) -> str:
    env = ctx.desired.get("Environment", tenant, environment)
    return "heartbeat" if env is None else str(env.doc.facts["activation"])


def instance_id(tenant: str, name: str, generation: int, ordinal: int) -> str:
    """``tenant:deployment-g<generation>-<ordinal>``: unique across tenants (names cannot hold ':')."""
    return f"{tenant}:{name}-g{generation}-{ordinal}"


def _provision(ctx: context.Context, tenant: str, name: str, generation: int, ordinal: int, spec: Any, activation: str) -> None:
    iid = instance_id(tenant, name, generation, ordinal)
    after = {
        "state": "PROVISIONING",
        "deployment": name,
        "generation": generation,
        "version": spec.version,
        "environment": spec.environment,
    }
    data = {
        "deployment": name,
        "generation": generation,
        "version": spec.version,
        "environment": spec.environment,
        "template": spec.template,
    }
    ctx.add(Action("provision", "Instance", tenant, iid, "INSTANCE_CREATED", None, after, data=data))
    if activation == "immediate":
        ctx.add(
            Action(
                "instance-state", "Instance", tenant, iid, "INSTANCE_TRANSITIONED", {"state": "PROVISIONING"}, {"state": "ACTIVE"}
            )
        )


def _drain(ctx: context.Context, instance: actual_.InstanceRow) -> None:
    """Drain then retire an instance; one held by an emergency control is left as it is."""
    if instance.held_by is not None or instance.state in machines.HELD_STATES:
        ctx.wait(
            Condition(
                "Deployment",
                instance.tenant,
                instance.deployment,
                "Held",
                "EmergencyHold",
                f"instance {instance.id} is {instance.state} by an emergency control ({instance.held_by or 'operator'}); "
                "Git wants it retired, the control wins until it is released",
            )
        )
        return
    state = instance.state
    for target in ("RETIRED",) if state in ("PROVISIONING", "DRAINING") else ("DRAINING", "RETIRED"):
        machines.INSTANCE.check(state, target)
        ctx.add(
            Action(
                "instance-state",
                "Instance",
                instance.tenant,
                instance.id,
                "INSTANCE_TRANSITIONED",
                {"state": state},
                {"state": target},
            )
        )
        state = target


def _plan_scale(ctx: context.Context, tenant: str, name: str, current: actual_.DeploymentRecord, replicas: int) -> None:
    live = ctx.actual.instances.get(current.id, [])
    for instance in live:
        if instance.held_by is not None or instance.state in machines.HELD_STATES:
            ctx.wait(
                Condition(
                    "Deployment",
                    tenant,
                    name,
                    "Held",
                    "EmergencyHold",
                    f"instance {instance.id} is {instance.state} by an emergency control ({instance.held_by or 'operator'}); Git wants it ACTIVE",
                )
            )
    if replicas == current.replicas and len(live) == replicas:
        return
    if replicas != current.replicas:
        ctx.add(
            Action(
                "record-replicas",
                "Deployment",
                tenant,
                name,
                "DEPLOYMENT_SCALED",
                {"generation": current.generation, "replicas": current.replicas},
                {"generation": current.generation, "replicas": replicas},
                data={"generation": current.generation, "replicas": replicas},
            )
        )
    if len(live) < replicas:
        used = {int(i.id.rsplit("-", 1)[1]) for i in live}
        ordinals = [n for n in range(replicas + len(used)) if n not in used][: replicas - len(live)]
        spec = DeploySpec.of(ctx.desired.objects[("Deployment", tenant, name)])
        activation = _activation(ctx, tenant, current.environment)
        for ordinal in ordinals:
            _provision(ctx, tenant, name, current.generation, ordinal, spec, activation)
    elif len(live) > replicas:
        free = [i for i in live if i.held_by is None and i.state not in machines.HELD_STATES]
        for instance in sorted(free, key=lambda i: int(i.id.rsplit("-", 1)[1]), reverse=True)[: len(live) - replicas]:
            _drain(ctx, instance)


def plan_removal(ctx: context.Context, tenant: str, name: str) -> None:
    """A Deployment manifest was removed: retire its current record and drain its instances."""
    current = ctx.actual.current_deployment(tenant, name)
    if current is not None:
        _retire_record(ctx, current, current.state)
