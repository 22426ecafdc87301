"""The moves a deployment plan is made of: record states, instances provisioned and drained.

``deploying`` (new records, scaling, removal) and ``rolling`` (canary steps) plan with these:
one legal state step of a deployment record with its change record, retiring a record with its
instances, provisioning an instance bound to a record's version, draining one (an instance held
by an emergency control is left as it is and reported as held drift), and bringing a record to
a number of instances. Pure, like the planners; every action is checked against
``lifecycle.machines`` before it is added.
"""

from __future__ import annotations

from typing import Any

from reconciler.lifecycle import machines
from reconciler.reconcile import actions as actions_
from reconciler.reconcile import context
from reconciler.state import actual as actual_

__all__ = [
    "activation",
    "converge_released",
    "drain",
    "instance_id",
    "is_held",
    "record_replicas",
    "record_state",
    "report_held",
    "resize",
    "retire_record",
    "scale_to",
]

Action = actions_.Action
Condition = actions_.Condition
Record = actual_.DeploymentRecord

#: A tenant's kill switch → the state and change record of an instance created while it is pulled.
_TENANT_HOLDS = {"pause": ("PAUSED", "EMERGENCY_PAUSE"), "quarantine": ("QUARANTINED", "EMERGENCY_QUARANTINE")}

#: ``rollout`` of a canary record that went away before it completed because Git moved on.
ABORTED = "ABORTED"


def record_state(
    ctx: context.Context,
    tenant: str,
    name: str,
    record_type: str,
    generation: int,
    state: str,
    target: str,
    version_before: str | None = None,
    version_after: str | None = None,
    *,
    rollout: str | None = None,
    reason: str | None = None,
) -> None:
    """One legal step of a deployment record, with its change record (and its new ``rollout``)."""
    machines.DEPLOYMENT.check(state, target)
    before: dict[str, Any] = {"generation": generation, "state": state}
    after: dict[str, Any] = {"generation": generation, "state": target}
    columns: dict[str, Any] = {"state": target}
    if version_before is not None:
        before["version"] = version_before
    if version_after is not None:
        after["version"] = version_after
    if rollout is not None:
        after["rollout"] = columns["rollout"] = rollout
    if reason is not None:
        after["reason"] = reason
    ctx.add(
        Action(
            op="record-state",
            kind="Deployment",
            tenant=tenant,
            name=name,
            record=record_type,
            before=before,
            after=after,
            data={"generation": generation, "columns": columns},
        )
    )


def retire_record(ctx: context.Context, record: Record, state: str, rollout: str | None = None) -> None:
    """Retire a record and drain its instances; a canary still in progress ends ABORTED."""
    if rollout is None and record.rollout in actual_.CANARY_IN_PROGRESS:
        rollout = ABORTED
    record_state(ctx, record.tenant, record.name, "DEPLOYMENT_RETIRED", record.generation, state, "RETIRED", rollout=rollout)
    for instance in ctx.actual.instances.get(record.id, []):
        drain(ctx, instance)


def converge_released(ctx: context.Context) -> None:
    """Drain the instances of retired records that an emergency control held when their record
    retired and has released since: Git wants them gone, and nothing else would look at them."""
    for records in ctx.actual.deployments.values():
        for record in records:
            if record.state != "RETIRED":
                continue
            for instance in ctx.actual.instances.get(record.id, []):
                if not is_held(instance):
                    drain(ctx, instance)


def activation(ctx: context.Context, tenant: str, environment: str) -> str:
    env = ctx.desired.get("Environment", tenant, environment)
    return "heartbeat" if env is None else str(env.doc.facts["activation"])


def instance_id(tenant: str, name: str, generation: int, ordinal: int) -> str:
    """``tenant:deployment-g<generation>-<ordinal>``: unique across tenants (names cannot hold ':')."""
    return f"{tenant}:{name}-g{generation}-{ordinal}"


def _ordinal(instance: actual_.InstanceRow) -> int:
    return int(instance.id.rsplit("-", 1)[1])


def is_held(instance: actual_.InstanceRow) -> bool:
    return instance.held_by is not None or instance.state in machines.HELD_STATES


def _provision(ctx: context.Context, record: Record, ordinal: int, how: str) -> None:
    """One instance bound to ``record``'s version (not the manifest's: during a canary or a gate
    wait the two differ)."""
    iid = instance_id(record.tenant, record.name, record.generation, ordinal)
    after = {
        "state": "PROVISIONING",
        "deployment": record.name,
        "generation": record.generation,
        "version": record.version,
        "environment": record.environment,
    }
    data = after | {"template": record.template}
    del data["state"]
    hold = ctx.actual.tenant_holds.get(record.tenant)
    if hold is not None:
        # The tenant's kill switch holds what is created under it too: the row says so, as the
        # decisions do (one truth), and resuming the tenant releases it like the others.
        data["heldBy"] = f"tenant-{hold}"
    ctx.add(
        Action(
            op="provision",
            kind="Instance",
            tenant=record.tenant,
            name=iid,
            record="INSTANCE_CREATED",
            before=None,
            after=after,
            data=data,
        )
    )
    if hold is not None:
        target, record_type = _TENANT_HOLDS[hold]
        machines.INSTANCE.check("PROVISIONING", target)
        ctx.add(
            Action(
                op="instance-state",
                kind="Instance",
                tenant=record.tenant,
                name=iid,
                record=record_type,
                before={"state": "PROVISIONING"},
                after={"state": target, "control": f"tenant-{hold}"},
            )
        )
    elif how == "immediate":
        ctx.add(
            Action(
                op="instance-state",
                kind="Instance",
                tenant=record.tenant,
                name=iid,
                record="INSTANCE_TRANSITIONED",
                before={"state": "PROVISIONING"},
                after={"state": "ACTIVE"},
            )
        )


def drain(ctx: context.Context, instance: actual_.InstanceRow) -> None:
    """Drain then retire an instance; one held by an emergency control is left as it is."""
    if is_held(instance):
        ctx.wait(
            Condition(
                kind="Deployment",
                tenant=instance.tenant,
                name=instance.deployment,
                type="Held",
                reason="EmergencyHold",
                message=f"instance {instance.id} is {instance.state} by an emergency control ({instance.held_by or 'operator'}); "
                "Git wants it retired, the control wins until it is released",
            )
        )
        return
    state = instance.state
    for target in ("RETIRED",) if state in ("PROVISIONING", "DRAINING") else ("DRAINING", "RETIRED"):
        machines.INSTANCE.check(state, target)
        ctx.add(
            Action(
                op="instance-state",
                kind="Instance",
                tenant=instance.tenant,
                name=instance.id,
                record="INSTANCE_TRANSITIONED",
                before={"state": state},
                after={"state": target},
            )
        )
        state = target


def report_held(ctx: context.Context, record: Record) -> None:
    """Held drift: instances of a record that Git wants ACTIVE and an operator holds."""
    for instance in ctx.actual.instances.get(record.id, []):
        if is_held(instance):
            ctx.wait(
                Condition(
                    kind="Deployment",
                    tenant=record.tenant,
                    name=record.name,
                    type="Held",
                    reason="EmergencyHold",
                    message=f"instance {instance.id} is {instance.state} by an emergency control ({instance.held_by or 'operator'}); Git wants it ACTIVE",
                )
            )


def scale_to(ctx: context.Context, record: Record, count: int) -> None:
    """Provision or drain until ``record`` has ``count`` live instances.

    New instances take the next ordinals (an instance id is never reused: retired rows stay);
    the highest-numbered free instances drain first. Held instances count as live and are never
    drained here (the control wins).
    """
    live = ctx.actual.instances.get(record.id, []) if record.id >= 0 else []
    if len(live) < count:
        start = max([ctx.actual.instance_counts.get(record.id, 0)] + [_ordinal(i) + 1 for i in live])
        how = activation(ctx, record.tenant, record.environment)
        for ordinal in range(start, start + count - len(live)):
            _provision(ctx, record, ordinal, how)
    elif len(live) > count:
        free = [i for i in live if not is_held(i)]
        for instance in sorted(free, key=_ordinal, reverse=True)[: len(live) - count]:
            drain(ctx, instance)


def resize(ctx: context.Context, record: Record, replicas: int) -> None:
    """Give ``record`` ``replicas`` instances, recording ``DEPLOYMENT_SCALED`` if that is a new count."""
    record_replicas(ctx, record, replicas)
    scale_to(ctx, record, replicas)


def record_replicas(ctx: context.Context, record: Record, replicas: int) -> None:
    """``DEPLOYMENT_SCALED`` when ``record`` is to serve a new number of replicas (its instances unchanged)."""
    if replicas != record.replicas:
        ctx.add(
            Action(
                op="record-replicas",
                kind="Deployment",
                tenant=record.tenant,
                name=record.name,
                record="DEPLOYMENT_SCALED",
                before={"generation": record.generation, "replicas": record.replicas},
                after={"generation": record.generation, "replicas": replicas},
                data={"generation": record.generation, "columns": {"replicas": replicas}},
            )
        )
