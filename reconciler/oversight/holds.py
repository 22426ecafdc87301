"""Emergency controls: operators pause, quarantine, set read-only, drain or resume instances.

Controls win over Git: a held instance keeps its state until an operator releases it, and the
reconciler reports the difference from Git as held drift instead of undoing it. Each control is
authorised by the operator's roles (permission ``instances:<control>``, or a wildcard), checked
against the instance lifecycle, and recorded: ``EMERGENCY_PAUSE`` / ``EMERGENCY_QUARANTINE`` for
those two, ``INSTANCE_TRANSITIONED`` for the rest.

A whole tenant can be paused or quarantined at once (the kill switch, permission
``tenants:<control>``): every instance it is legal for is held (``held_by`` ``tenant-pause`` /
``tenant-quarantine``), and the hold itself is kept (``tenant_holds``; recorded on the Tenant
as ``EMERGENCY_PAUSE`` / ``EMERGENCY_QUARANTINE``, its release as ``EMERGENCY_RELEASE``), so the decider denies
every call of the tenant's instances, those created after the switch was pulled included.
Resuming the tenant releases the hold and the instances it held; an instance an operator held
on its own stays held. An instance the reconciler creates while the switch is pulled is created
held by it. A resume never stands in for a runtime's first heartbeat: an instance that never
started goes back to ``PROVISIONING``, not ``ACTIVE``.

Continuous evaluation pulls the same controls (:func:`restrict`): a failing run of a safety or
regression suite sets the instances of a deployed version read-only or pauses them
(``held_by`` names the run), recorded as ``EMERGENCY_READONLY`` / ``EMERGENCY_PAUSE`` with the run
as the reason. An operator resumes them as any held instance; a later passing run does not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.lifecycle import machines
from reconciler.oversight import access
from reconciler.state import fleetstate, tables

__all__ = [
    "CONTROLS",
    "RESTRICTIONS",
    "TENANT_CONTROLS",
    "Controlled",
    "control_instance",
    "control_tenant",
    "instance_tenant",
    "restrict",
    "tenant_holds",
]

#: control → (target state, change-record type, whether the instance is then held)
CONTROLS: dict[str, tuple[str, str, bool]] = {
    "pause": ("PAUSED", "EMERGENCY_PAUSE", True),
    "quarantine": ("QUARANTINED", "EMERGENCY_QUARANTINE", True),
    "read-only": ("READONLY", "INSTANCE_TRANSITIONED", True),
    "drain": ("DRAINING", "INSTANCE_TRANSITIONED", False),
    "resume": ("ACTIVE", "INSTANCE_TRANSITIONED", False),
}


@dataclasses.dataclass(frozen=True)
class Controlled:
    instance: str
    before: str
    after: str


#: What the kill switch does to a tenant.
TENANT_CONTROLS = ("pause", "quarantine", "resume")

#: A suite's ``onFailure`` → (target state, change-record type): what continuous evaluation does.
RESTRICTIONS: dict[str, tuple[str, str]] = {
    "readonly": ("READONLY", "EMERGENCY_READONLY"),
    "pause": ("PAUSED", "EMERGENCY_PAUSE"),
}


def instance_tenant(connection: sa.Connection, instance_id: str) -> str | None:
    """The tenant of an instance; None when it does not exist."""
    i = tables.instances.c
    return connection.execute(sa.select(i.tenant).where(i.id == instance_id)).scalar()


def tenant_holds(connection: sa.Connection) -> dict[str, str]:
    """Tenants whose kill switch is pulled → the instance state it holds them in."""
    h = tables.tenant_holds.c
    return {row.tenant: CONTROLS[row.control][0] for row in connection.execute(sa.select(h.tenant, h.control))}


def control_instance(
    connection: sa.Connection, instance_id: str, control: str, operator: str, reason: str, now: dt.datetime
) -> Controlled:
    if control not in CONTROLS:
        raise errors.ConfigError(f"unknown control {control!r}: use one of {', '.join(CONTROLS)}")
    i = tables.instances
    row = connection.execute(sa.select(i).where(i.c.id == instance_id).with_for_update()).mappings().first()
    if row is None:
        raise errors.NotFound(f"instance {instance_id!r} does not exist")
    if not access.allows(access.operator_permissions(connection, row["tenant"], operator), f"instances:{control}"):
        raise errors.Forbidden(f"operator {operator!r} lacks permission instances:{control} in tenant {row['tenant']!r}")
    target, record_type, held = CONTROLS[control]
    if control == "resume":
        target = _resumed_state(connection, row)
    machines.INSTANCE.check(row["state"], target)
    _write(connection, row, target, record_type, held, control, operator, reason, now)
    fleetstate.bump_generation(connection)
    return Controlled(instance_id, row["state"], target)


def control_tenant(
    connection: sa.Connection, tenant: str, control: str, operator: str, reason: str, now: dt.datetime
) -> list[Controlled]:
    """The kill switch: hold ``tenant`` (pause, quarantine) or release it (resume); the
    instances changed. See the module docstring."""
    if control not in TENANT_CONTROLS:
        raise errors.ConfigError(f"a tenant-wide control is {', '.join(TENANT_CONTROLS)}, not {control!r}")
    # The tenant's own row serialises kill switches: a hold row that does not exist yet locks nothing.
    t = tables.tenants.c
    if connection.execute(sa.select(t.id).where(t.name == tenant, t.status == "ACTIVE").with_for_update()).first() is None:
        raise errors.NotFound(f"tenant {tenant!r} is not declared in the applied fleet")
    if not access.allows(access.operator_permissions(connection, tenant, operator), f"tenants:{control}"):
        raise errors.Forbidden(f"operator {operator!r} lacks permission tenants:{control} in tenant {tenant!r}")
    h = tables.tenant_holds
    before = connection.execute(sa.select(h.c.control).where(h.c.tenant == tenant)).scalar_one_or_none()
    if control == "resume" and before is None:
        raise errors.Conflict(f"tenant {tenant!r} is not held by its kill switch; resume its instances one by one")
    if control == "pause" and before == "quarantine":
        raise errors.Conflict(f"tenant {tenant!r} is quarantined; resume it before pausing it")
    connection.execute(h.delete().where(h.c.tenant == tenant))
    if control != "resume":
        connection.execute(h.insert().values(tenant=tenant, control=control, operator=operator, reason=reason, held_at=now))
    target, record_type, _ = CONTROLS[control]
    chain.append(
        connection,
        [
            chain.Record(
                tenant=tenant,
                type="EMERGENCY_RELEASE" if control == "resume" else record_type,
                object_kind="Tenant",
                object_name=tenant,
                before={"hold": before},
                after={"hold": None if control == "resume" else control, "reason": reason},
                operator=operator,
            )
        ],
        now,
    )
    i = tables.instances
    query = sa.select(i).where(i.c.tenant == tenant, i.c.state != "RETIRED")
    if control == "resume":  # only what the switch held: an instance held on its own stays held
        query = query.where(i.c.held_by.in_([f"tenant-{c}" for c in TENANT_CONTROLS]))
    done = []
    for row in connection.execute(query.order_by(i.c.id).with_for_update()).mappings().all():
        to = _resumed_state(connection, row) if control == "resume" else target
        if not machines.INSTANCE.is_legal(row["state"], to):
            continue
        _write(connection, row, to, record_type, control != "resume", f"tenant-{control}", operator, reason, now)
        done.append(Controlled(row["id"], row["state"], to))
    fleetstate.bump_generation(connection)
    return done


def _resumed_state(connection: sa.Connection, row: dict[str, object] | sa.RowMapping) -> str:
    """Where a resume takes an instance: ACTIVE, or back to PROVISIONING if it never started (no
    heartbeat yet, in an environment that activates by heartbeat): a resume releases a hold, it
    does not stand in for the runtime's first heartbeat."""
    if row["last_heartbeat"] is not None or row["state"] != "PAUSED":
        return "ACTIVE"
    e = tables.environments.c
    spec = connection.execute(sa.select(e.spec).where(e.tenant == row["tenant"], e.name == row["environment"])).scalar()
    activation = spec.get("activation") if isinstance(spec, dict) else None  # the manifest's spec; default heartbeat
    return "ACTIVE" if activation == "immediate" else "PROVISIONING"


def restrict(
    connection: sa.Connection,
    tenant: str,
    version: str,
    on_failure: str,
    held_by: str,
    reason: str,
    now: dt.datetime,
    *,
    operator: str | None = None,
    author: str = "",
    run: int | None = None,
) -> tuple[list[Controlled], list[Controlled]]:
    """Continuous evaluation: hold every live instance of ``version`` as ``on_failure`` says
    (``readonly``, ``pause``); (restricted, left as they were). An instance already held (by an
    operator, the kill switch, an earlier run) keeps its hold; one the control cannot reach from
    its state (a read-only control on an instance still provisioning, a draining one) is left."""
    target, record_type = RESTRICTIONS[on_failure]
    i = tables.instances
    query = sa.select(i).where(i.c.tenant == tenant, i.c.version == version, i.c.state != "RETIRED")
    done: list[Controlled] = []
    left: list[Controlled] = []
    records = []
    for row in connection.execute(query.order_by(i.c.id).with_for_update()).mappings():
        if (
            row["held_by"] is not None
            or row["state"] in machines.HELD_STATES
            or not machines.INSTANCE.is_legal(row["state"], target)
        ):
            left.append(Controlled(row["id"], row["state"], row["state"]))
            continue
        connection.execute(i.update().where(i.c.id == row["id"]).values(state=target, held_by=held_by, updated_at=now))
        records.append(
            chain.Record(
                tenant=tenant,
                type=record_type,
                object_kind="Instance",
                object_name=str(row["id"]),
                before={"state": row["state"]},
                after={"state": target, "control": held_by, "reason": reason, "run": run},
                operator=operator,
                author=author,
            )
        )
        done.append(Controlled(row["id"], row["state"], target))
    if records:
        chain.append(connection, records, now)
        fleetstate.bump_generation(connection)
    return done, left


def _write(
    connection: sa.Connection,
    row: dict[str, object] | sa.RowMapping,
    target: str,
    record_type: str,
    held: bool,
    control: str,
    operator: str,
    reason: str,
    now: dt.datetime,
) -> None:
    i = tables.instances
    connection.execute(
        i.update().where(i.c.id == row["id"]).values(state=target, held_by=control if held else None, updated_at=now)
    )
    chain.append(
        connection,
        [
            chain.Record(
                tenant=str(row["tenant"]),
                type=record_type,
                object_kind="Instance",
                object_name=str(row["id"]),
                before={"state": row["state"]},
                after={"state": target, "control": control, "reason": reason},
                operator=operator,
            )
        ],
        now,
    )
