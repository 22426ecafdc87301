"""Canary rollouts: a new deployment record takes over its Deployment's replicas step by step.

With ``strategy: {type: Canary, steps: [10, 50, 100]}`` a new ``spec.version`` does not replace
the running record at once. The reconcile that sees the change creates the record and takes the
first step: at weight ``w`` the canary serves ``ceil(replicas * w / 100)`` instances (at least
one) and the previous record, which stays ACTIVE, serves the rest; its instances drain as the
canary's are provisioned. Every later reconcile that may *advance* (``armctl apply``, the
daemon's canary job, but not its Git poll) takes one more step when every canary instance is
ACTIVE and HEALTHY, and waits while any is still PROVISIONING or has not reported its health.
The step to 100 retires the previous record as ``AllAtOnce`` would. Each step writes
``DEPLOYMENT_CANARY_STEPPED`` (weight from → to).

A canary is unhealthy when an instance is UNHEALTHY (its heartbeats stopped) or an operator
paused, quarantined, set read-only or drained one. Then it halts where it is
(``DEPLOYMENT_CANARY_HALTED``, written once) and goes on when it is healthy again
(``DEPLOYMENT_CANARY_RESUMED``); with ``autoRollback`` it rolls back instead: the canary record
goes ``ACTIVE → ROLLING_BACK → RETIRED`` (``DEPLOYMENT_ROLLED_BACK``, ``DEPLOYMENT_RETIRED``),
the previous record gets every replica back, and the canary's instances drain. That is sticky:
while ``spec.version`` still names the rolled-back version, a ``RolledBack`` condition says so and
nothing is retried; any other version rolls out normally (and coming back to it later retries).

Progress lives on the record (``rollout``, ``canary_step``). Health is passed in (``ctx.health``,
read fresh by the reconciler): this module is pure, like the other planners. It works with
``provisioning`` for the moves and is called by ``deploying``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from reconciler.reconcile import actions as actions_
from reconciler.reconcile import context, provisioning
from reconciler.state import actual as actual_

__all__ = [
    "ABORTED",
    "COMPLETE",
    "HALTED",
    "PROGRESSING",
    "ROLLED_BACK",
    "canary_count",
    "first_step",
    "hold",
    "in_progress",
    "keep_rolled_back",
    "plan_canary",
    "plan_revert",
    "wants_canary",
]

Action = actions_.Action
Condition = actions_.Condition
Record = actual_.DeploymentRecord

PROGRESSING, HALTED = actual_.CANARY_IN_PROGRESS
COMPLETE = "COMPLETE"
ROLLED_BACK = "ROLLED_BACK"
ABORTED = provisioning.ABORTED

#: The reason of the condition that keeps a rolled-back version from being retried.
ROLLED_BACK_REASON: Final = "CanaryRolledBack"


def canary_count(replicas: int, weight: int) -> int:
    """Instances the canary serves at ``weight`` percent: ceil(replicas × weight / 100), at least one."""
    if replicas <= 0:
        return 0
    return min(replicas, max(1, -(-replicas * weight // 100)))


def in_progress(record: Record | None) -> bool:
    return record is not None and record.rollout in actual_.CANARY_IN_PROGRESS


def wants_canary(strategy: dict[str, Any], base: Record | None, replicas: int) -> bool:
    """A new version rolls out by steps when the strategy says so and there is something running
    to shift replicas from; a first deployment (or one of no replicas) starts at once."""
    return strategy.get("type") == "Canary" and bool(strategy.get("steps")) and base is not None and replicas > 0


# ------------------------------------------------------------------ health


@dataclasses.dataclass
class _Health:
    healthy: int = 0
    waiting: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        shown = "; ".join(self.problems[:3])
        return shown + (f" and {len(self.problems) - 3} more" if len(self.problems) > 3 else "")


def _health(ctx: context.Context, canary: Record, expected: int) -> _Health:
    """How the canary's instances are: all ACTIVE and HEALTHY, some still coming up, or unhealthy."""
    result = _Health()
    live = ctx.actual.instances.get(canary.id, [])
    for instance in live:
        health = ctx.health.get(instance.id, "UNKNOWN")
        if provisioning.is_held(instance) or instance.state == "DRAINING":
            result.problems.append(f"{instance.id} is {instance.state}")
        elif health == "UNHEALTHY":
            result.problems.append(f"{instance.id} is UNHEALTHY")
        elif instance.state == "ACTIVE" and health == "HEALTHY":
            result.healthy += 1
        else:
            result.waiting += 1
    result.waiting += max(0, expected - len(live))  # about to be provisioned
    return result


# ------------------------------------------------------------------ steps


def _weights(record: Record) -> list[int]:
    return [int(w) for w in record.strategy["steps"]]


def first_step(ctx: context.Context, record: Record, base: Record) -> None:
    """The reconcile that sees the new version takes the first step (``record`` is being created)."""
    _step(ctx, record, base, None, 0, healthy=0)  # a record being created has no instances yet


def _step(ctx: context.Context, canary: Record, stable: Record | None, index: int | None, to: int, healthy: int) -> None:
    weights = _weights(canary)
    replicas = canary.replicas
    count = canary_count(replicas, weights[to])
    last = to == len(weights) - 1
    rollout = COMPLETE if last else PROGRESSING
    before = {
        "generation": canary.generation,
        "weight": 0 if index is None else weights[index],
        "step": 0 if index is None else index + 1,
        "instances": 0 if index is None else canary_count(replicas, weights[index]),
    }
    after = {"generation": canary.generation, "weight": weights[to], "step": to + 1, "instances": count, "rollout": rollout}
    _record_rollout(ctx, canary, "DEPLOYMENT_CANARY_STEPPED", before, after, {"rollout": rollout, "canary_step": to})
    provisioning.scale_to(ctx, canary, count)
    if stable is not None:
        if last:
            provisioning.retire_record(ctx, stable, stable.state)
        else:
            provisioning.scale_to(ctx, stable, replicas - count)
    if not last:
        ctx.wait(_progressing(canary._replace(canary_step=to), stable, _Health(healthy=healthy)))


def hold(ctx: context.Context, canary: Record, stable: Record | None) -> None:
    """Keep a canary at its step: each record keeps its share (re-provisioned if one went missing)."""
    count = canary_count(canary.replicas, _weights(canary)[canary.canary_step or 0])
    provisioning.report_held(ctx, canary)
    provisioning.scale_to(ctx, canary, count)
    if stable is not None:
        provisioning.report_held(ctx, stable)
        provisioning.scale_to(ctx, stable, canary.replicas - count)


def plan_canary(ctx: context.Context, replicas: int, canary: Record, stable: Record | None) -> None:
    """A canary in progress whose version the manifest still asks for: step, wait, halt or roll back."""
    if replicas != canary.replicas:
        provisioning.record_replicas(ctx, canary, replicas)
        canary = canary._replace(replicas=replicas)
    index = canary.canary_step or 0
    weights = _weights(canary)
    health = _health(ctx, canary, canary_count(canary.replicas, weights[index]))
    auto = bool(canary.strategy.get("autoRollback"))
    if health.problems and auto and ctx.advance:
        _roll_back(ctx, canary, stable, health)
        return
    if health.problems:
        if ctx.advance and canary.rollout != HALTED:
            _set_rollout(ctx, canary, "DEPLOYMENT_CANARY_HALTED", HALTED, health.summary())
        then = "rolls back on the next canary step (autoRollback)" if auto else "goes on once they are healthy again"
        ctx.wait(
            Condition(
                kind="Deployment",
                tenant=canary.tenant,
                name=canary.name,
                type="Halted",
                reason="CanaryUnhealthy",
                message=f"canary {canary.version} halted at {weights[index]}% (step {index + 1} of {len(weights)}): "
                f"{health.summary()}; it {then}",
            )
        )
        hold(ctx, canary, stable)
        return
    if ctx.advance and canary.rollout == HALTED:
        _set_rollout(ctx, canary, "DEPLOYMENT_CANARY_RESUMED", PROGRESSING, None)
    # A canary scaled to no replicas has nobody to wait for: it steps on (to completion).
    if ctx.advance and health.waiting == 0 and (health.healthy > 0 or canary.replicas == 0):
        provisioning.report_held(ctx, canary)
        if stable is not None:
            provisioning.report_held(ctx, stable)
        _step(ctx, canary, stable, index, index + 1, health.healthy)
        return
    ctx.wait(_progressing(canary, stable, health))
    hold(ctx, canary, stable)


def _progressing(canary: Record, stable: Record | None, health: _Health) -> Condition:
    weights = _weights(canary)
    index = canary.canary_step or 0
    count = canary_count(canary.replicas, weights[index])
    rest = f", {canary.replicas - count} left on {stable.version}" if stable is not None else ""
    return Condition(
        kind="Deployment",
        tenant=canary.tenant,
        name=canary.name,
        type="Progressing",
        reason="CanaryProgressing",
        message=f"canary {canary.version} at {weights[index]}% (step {index + 1} of {len(weights)}): {health.healthy} of {count} "
        f"canary instances healthy{rest}; the next step waits for all of them to be ACTIVE and HEALTHY",
    )


def _set_rollout(ctx: context.Context, canary: Record, record_type: str, rollout: str, reason: str | None) -> None:
    weight = _weights(canary)[canary.canary_step or 0]
    before = {"generation": canary.generation, "rollout": canary.rollout, "weight": weight}
    after: dict[str, Any] = {"generation": canary.generation, "rollout": rollout, "weight": weight}
    if reason is not None:
        after["reason"] = reason
    _record_rollout(ctx, canary, record_type, before, after, {"rollout": rollout})


def _record_rollout(
    ctx: context.Context, canary: Record, record_type: str, before: dict[str, Any], after: dict[str, Any], columns: dict[str, Any]
) -> None:
    """Set ``columns`` of the canary's record, written as a ``record_type`` change record."""
    data = {"generation": canary.generation, "columns": columns}
    ctx.add(
        Action(
            op="record-rollout",
            kind="Deployment",
            tenant=canary.tenant,
            name=canary.name,
            record=record_type,
            before=before,
            after=after,
            data=data,
        )
    )


# ------------------------------------------------------------------ going back


def _roll_back(ctx: context.Context, canary: Record, stable: Record | None, health: _Health) -> None:
    """autoRollback: the canary record rolls back and retires; the previous one serves every replica."""
    weight = _weights(canary)[canary.canary_step or 0]
    _back_to_stable(ctx, canary, stable, canary.replicas, ROLLED_BACK, f"canary unhealthy: {health.summary()}")
    back_to = f" to {stable.version}" if stable is not None else ""
    ctx.wait(
        Condition(
            kind="Deployment",
            tenant=canary.tenant,
            name=canary.name,
            type="RolledBack",
            reason=ROLLED_BACK_REASON,
            message="rolled back: canary unhealthy; change spec.version to roll out again "
            f"({canary.version} was rolled back{back_to} at {weight}%: {health.summary()})",
        )
    )


def plan_revert(ctx: context.Context, replicas: int, canary: Record, stable: Record) -> None:
    """The manifest went back to the previous version (a ``git revert``) before the canary
    completed: the canary rolls back at once, whatever its health, and the previous record
    serves every replica again."""
    _back_to_stable(ctx, canary, stable, replicas, ABORTED, f"spec.version is {stable.version} again")


def _back_to_stable(
    ctx: context.Context, canary: Record, stable: Record | None, replicas: int, rollout: str, reason: str
) -> None:
    """The canary record rolls back (``rollout`` says why) and retires; ``stable`` serves ``replicas``."""
    provisioning.record_state(
        ctx, canary.tenant, canary.name, "DEPLOYMENT_ROLLED_BACK", canary.generation, canary.state, "ROLLING_BACK",
        canary.version, stable.version if stable else None, rollout=rollout, reason=reason,
    )  # fmt: skip
    if stable is not None:
        provisioning.report_held(ctx, stable)
        provisioning.resize(ctx, stable, replicas)
    provisioning.retire_record(ctx, canary, "ROLLING_BACK", rollout)


def keep_rolled_back(ctx: context.Context, tenant: str, name: str, version: str, environment: str, template: str) -> bool:
    """Whether the manifest still asks for a version its canary rolled back: then that is not retried.

    Sticky while the newest record is that rolled-back canary and the Deployment still carries
    the condition saying so. A commit naming another version clears the condition, so coming
    back to the version later is a new attempt. The stored condition is carried over as it is.
    """
    records = ctx.actual.deployments.get((tenant, name), [])
    if not records:
        return False
    last = records[-1]
    if last.rollout != ROLLED_BACK or (last.version, last.environment, last.template) != (version, environment, template):
        return False
    stored = [c for c in ctx.actual.conditions.get(("Deployment", tenant, name), []) if c["reason"] == ROLLED_BACK_REASON]
    for c in stored:
        ctx.wait(Condition(kind="Deployment", tenant=tenant, name=name, type=c["type"], reason=c["reason"], message=c["message"]))
    return bool(stored)
