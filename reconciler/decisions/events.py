"""Runtime events: heartbeats, cost ticks and tool-call results, as op events; OPA decision logs.

A heartbeat marks the instance alive and, the first time, takes it from PROVISIONING to ACTIVE
(``INSTANCE_TRANSITIONED``, with the state generation bumped so the reconciler re-plans); cost
ticks feed the budgets of later decisions; tool results are kept for the record. Payloads are
redacted before they are stored. OPA sidecars upload their decision logs (:func:`record_decision_logs`),
kept as ``OPA_DECISION`` op events of the uploading token's tenant, redacted alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.lifecycle import machines
from reconciler.policy import inputs as policy_deciding
from reconciler.policy import risk
from reconciler.state import fleetstate, opevents, tables

__all__ = ["EVENT_TYPES", "heartbeat_rules", "mark_stale", "record", "record_decision_logs"]

EVENT_TYPES = ("HEARTBEAT", "COST", "TOOL_RESULT")


def record(connection: sa.Connection, tenant: str, event: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Store one event for an instance of ``tenant``; returns what it changed."""
    kind = str(event.get("type", "")).upper()
    if kind not in EVENT_TYPES:
        raise errors.ConfigError(f"event type must be one of {', '.join(EVENT_TYPES)}, not {event.get('type')!r}")
    instance_id = event.get("instance")
    i = tables.instances
    row = connection.execute(sa.select(i.c.id, i.c.tenant, i.c.state, i.c.health).where(i.c.id == instance_id)).first()
    if row is None or row.tenant != tenant:
        raise errors.NotFound(f"instance {instance_id!r} does not exist in tenant {tenant!r}")
    payload = risk.redact(risk.clean({k: v for k, v in event.items() if k not in ("type", "instance")}))
    if kind == "COST":
        amount = payload.get("amount")
        if not isinstance(amount, int | float) or isinstance(amount, bool) or not 0 <= amount <= policy_deciding.MAX_COST:
            raise errors.ConfigError(f"a COST event needs a number 'amount' from 0 to {policy_deciding.MAX_COST:g}")
    result: dict[str, Any] = {"instance": row.id, "type": kind}
    if kind == "HEARTBEAT":
        values: dict[str, Any] = {"last_heartbeat": now, "health": "HEALTHY", "updated_at": now}
        if row.state == "PROVISIONING":
            machines.INSTANCE.check("PROVISIONING", "ACTIVE")
            values["state"] = "ACTIVE"
            chain.append(
                connection,
                [
                    chain.Record(
                        tenant,
                        "INSTANCE_TRANSITIONED",
                        "Instance",
                        row.id,
                        {"state": "PROVISIONING"},
                        {"state": "ACTIVE", "cause": "first heartbeat"},
                    )
                ],
                now,
            )
            fleetstate.bump_generation(connection)
            result["state"] = "ACTIVE"
        elif row.health == "UNHEALTHY":
            opevents.add(connection, [_health(tenant, row.id, now, "HEALTHY", "heartbeat received")])
        connection.execute(i.update().where(i.c.id == row.id).values(**values))
    opevents.add(connection, [{"tenant": tenant, "at": now, "type": kind, "instance": row.id, "payload": payload}])
    return result


def record_decision_logs(connection: sa.Connection, tenant: str, entries: list[Any], now: dt.datetime) -> int:
    """Keep an OPA decision-log upload's entries (objects; anything else is skipped), redacted."""
    rows = [
        {"tenant": tenant, "at": now, "type": "OPA_DECISION", "instance": None, "payload": risk.redact(e)}
        for e in entries
        if isinstance(e, dict)
    ]
    opevents.add(connection, rows)
    return len(rows)


def mark_stale(connection: sa.Connection, now: dt.datetime, timeout_seconds: float) -> list[str]:
    """Mark ACTIVE instances not heard from for their environment's timeout UNHEALTHY; returns
    their ids.

    The timeout is the environment's ``heartbeatTimeoutSeconds`` where it states one, else
    ``timeout_seconds`` (``ARM_HEARTBEAT_TIMEOUT_SECONDS``). An instance that never sent a
    heartbeat counts from its last change, except in an environment that activates instances at
    once (``activation: immediate``): it needs no runtime heartbeat, so silence there is only
    watched once a runtime has sent one. Each newly unhealthy instance gets a ``HEALTH`` op event.
    Health is not part of what a commit declares, so the state generation stays: a canary step
    reads its instances' health afresh, and nothing else in a plan depends on it (bumping it made
    every instance going quiet cost a full re-plan of the fleet).
    """
    environments = heartbeat_rules(connection, timeout_seconds)
    i = tables.instances.c
    shortest = min([timeout_seconds, *(rule[0] for rule in environments.values())])
    rows = connection.execute(
        sa.select(i.id, i.tenant, i.environment, i.last_heartbeat, i.updated_at).where(
            i.state == "ACTIVE",
            i.health != "UNHEALTHY",
            sa.func.coalesce(i.last_heartbeat, i.updated_at) < now - dt.timedelta(seconds=shortest),
        )
    ).all()
    stale = []
    for r in rows:
        timeout, immediate = environments.get((r.tenant, r.environment), (timeout_seconds, False))
        if r.last_heartbeat is None and immediate:
            continue
        if (r.last_heartbeat or r.updated_at) < now - dt.timedelta(seconds=timeout):
            stale.append((r, timeout))
    if not stale:
        return []
    ids = [r.id for r, _ in stale]
    connection.execute(tables.instances.update().where(i.id.in_(ids)).values(health="UNHEALTHY"))
    opevents.add(
        connection,
        [
            _health(
                r.tenant,
                r.id,
                now,
                "UNHEALTHY",
                f"no heartbeat for {timeout:g} s"
                + (f" (last {r.last_heartbeat.isoformat()})" if r.last_heartbeat else " (none received)"),
            )
            for r, timeout in stale
        ],
    )
    return ids


def heartbeat_rules(connection: sa.Connection, default_seconds: float) -> dict[tuple[str, str], tuple[float, bool]]:
    """(tenant, environment) → (heartbeat timeout in seconds, activates at once) of every
    environment applied; the timeout is ``default_seconds`` where the manifest states none."""
    e = tables.environments.c
    rules = {}
    for tenant, name, spec in connection.execute(sa.select(e.tenant, e.name, e.spec).where(e.status == "ACTIVE")):
        spec = spec if isinstance(spec, dict) else {}
        stated = spec.get("heartbeatTimeoutSeconds")
        timeout = (
            float(stated) if isinstance(stated, int | float) and not isinstance(stated, bool) and stated > 0 else default_seconds
        )
        rules[(tenant, name)] = (timeout, spec.get("activation") == "immediate")
    return rules


def _health(tenant: str, instance: str, now: dt.datetime, health: str, reason: str) -> dict[str, Any]:
    return {"tenant": tenant, "at": now, "type": "HEALTH", "instance": instance, "payload": {"health": health, "reason": reason}}
