"""The console's pages where operators act: the approvals queue, emergency controls, the
policy simulator.

Approving or denying goes through ``server.operators.decide_as``, a control through
``control_as`` and the tenant's kill switch through ``tenant_control_as``: the very functions
``POST /v1/approvals/{id}/decision``, ``POST /v1/instances/{id}/controls`` and ``POST
/v1/tenants/{tenant}/controls`` call, so the same roles, tenant and lifecycle checks decide, and
the same records are written. Each needs a justification or reason. A control first shows what it
will do (the instance, its state now and after; the tenant, how many instances) and is done only
once confirmed.

The simulator asks ``decisions.deciding.Decider.simulate``: the applied policy's answer, its
reasons and the risk for an instance (as it stands: its state, what it spent) or for a version
(a new instance of it), recorded nowhere; under another ref, ``reconcile.simulating.decide_at``.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import fastapi
from fastapi import responses

from reconciler import errors, money
from reconciler.decisions import deciding
from reconciler.oversight import approving, holds
from reconciler.reconcile import reporting, simulating
from reconciler.server import operators, services
from reconciler.server.console import web
from reconciler.state import database

__all__ = ["router"]

router = fastapi.APIRouter(include_in_schema=False)

STATUSES = ("pending", "approved", "denied", "expired", "used", "all")


@router.get("/ui/approvals")
def approvals(
    request: fastapi.Request, you: web.You, status: str | None = None, page: str | None = None
) -> responses.HTMLResponse:
    status = (status or "pending").lower()
    if status not in STATUSES:
        raise errors.ConfigError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    number = web.page_number(page)
    with database.reading(services.of(request).db) as connection:
        rows = approving.list_approvals(
            connection, None if status == "all" else status, you.tenant, instances=you.who.instances,
            limit=web.PAGE_SIZE + 1, offset=(number - 1) * web.PAGE_SIZE,
        )  # fmt: skip
    return web.page(
        request, "approvals.html", you, title="Approvals", rows=rows[: web.PAGE_SIZE], page=number,
        more=len(rows) > web.PAGE_SIZE, status=status, statuses=STATUSES,
    )  # fmt: skip


@router.get("/ui/approvals/{approval_id}")
def approval(request: fastapi.Request, approval_id: int, you: web.You) -> responses.HTMLResponse:
    with database.reading(services.of(request).db) as connection:
        rows = approving.list_approvals(connection, None, you.tenant, approval_id, instances=you.who.instances)
    if not rows:
        raise errors.NotFound(f"approval {approval_id} does not exist in tenant {you.tenant!r}")
    row = rows[0]
    return web.page(
        request, "approval.html", you, title=f"Approval {approval_id}", row=row, roles=approving.roles_of(row),
        args=json.dumps(row["request"]["args"], indent=2, sort_keys=True) if row["request"] else None,
    )  # fmt: skip


@router.post("/ui/approvals/{approval_id}/decision")
async def decide(request: fastapi.Request, approval_id: int, you: web.You) -> responses.Response:
    form = await web.read_form(request, you)
    decision = form.get("decision", "").upper()
    if decision not in ("APPROVE", "DENY"):
        raise errors.ConfigError("choose APPROVE or DENY")
    justification = form.get("justification", "").strip()
    if not justification:
        raise errors.ConfigError("say why the request is approved or denied; a justification may not be blank")
    served = services.of(request)
    result = await asyncio.to_thread(operators.decide_as, served, you.who, approval_id, decision, justification)
    web.sessions_of(request).notify(
        you.session.id, f"Approval {approval_id}: {decision.lower()}d by {you.operator} — now {result.status} "
        f"({result.approvals} of {result.required} approvals)",
    )  # fmt: skip
    return web.redirect(f"/ui/approvals/{approval_id}")


@router.post("/ui/instances/{instance_id}/controls")
async def control(request: fastapi.Request, instance_id: str, you: web.You) -> responses.Response:
    form = await web.read_form(request, you)
    control, reason = form.get("control", ""), form.get("reason", "").strip()
    if control not in holds.CONTROLS:
        raise errors.ConfigError(f"unknown control {control!r}: use one of {', '.join(holds.CONTROLS)}")
    if not reason:
        raise errors.ConfigError(f"say why: an emergency control ({control}) needs a reason, which the audit trail keeps")
    served = services.of(request)
    if form.get("confirm") != "yes":
        with database.reading(served.db) as connection:
            detail = reporting.instance(connection, instance_id)
        if detail["tenant"] != you.tenant:
            raise errors.NotFound(f"instance {instance_id!r} does not exist in tenant {you.tenant!r}")
        return web.page(
            request, "confirm.html", you, title=f"Confirm: {control} {instance_id}", instance=instance_id, control=control,
            reason=reason, before=detail["state"], after=holds.CONTROLS[control][0],
        )  # fmt: skip
    done = await asyncio.to_thread(operators.control_as, served, you.who, instance_id, control, reason)
    web.sessions_of(request).notify(you.session.id, f"{control}: instance {done.instance} {done.before} → {done.after}")
    return web.redirect(f"/ui/instances/{instance_id}")


@router.post("/ui/tenant/controls")
async def tenant_control(request: fastapi.Request, you: web.You) -> responses.Response:
    """The tenant's kill switch: shown first for confirmation (how many instances it holds or
    releases), done once confirmed."""
    form = await web.read_form(request, you)
    control, reason = form.get("control", ""), form.get("reason", "").strip()
    if control not in holds.TENANT_CONTROLS:
        raise errors.ConfigError(f"a tenant-wide control is {', '.join(holds.TENANT_CONTROLS)}, not {control!r}")
    if not reason:
        raise errors.ConfigError(f"say why: the tenant's kill switch ({control}) needs a reason, which the audit trail keeps")
    served = services.of(request)
    if form.get("confirm") != "yes":
        with database.reading(served.db) as connection:
            live = reporting.instances(connection, tenant=you.tenant)
            held = holds.tenant_holds(connection).get(you.tenant)
        return web.page(
            request, "confirm_tenant.html", you, title=f"Confirm: {control} tenant {you.tenant}", control=control,
            reason=reason, live=len(live), held=held,
        )  # fmt: skip
    done = await asyncio.to_thread(operators.tenant_control_as, served, you.who, you.tenant, control, reason)
    web.sessions_of(request).notify(you.session.id, f"{control}: tenant {you.tenant}, {len(done)} instance(s) changed")
    return web.redirect("/ui/instances")


@router.get("/ui/simulate")
def simulator(request: fastapi.Request, you: web.You) -> responses.HTMLResponse:
    return web.page(request, "simulate.html", you, title="Policy simulator", form={}, answer=None)


@router.post("/ui/simulate")
async def simulate(request: fastapi.Request, you: web.You) -> responses.HTMLResponse:
    form = await web.read_form(request, you)
    target, name = form.get("target", "instance"), form.get("name", "").strip()
    tool = form.get("tool", "").strip()
    if target not in ("instance", "version") or not name:
        raise errors.ConfigError("name an instance or a version (field 'name')")
    if not tool:
        raise errors.ConfigError("name the tool to call (field 'tool')")
    try:
        args = json.loads(form.get("args") or "{}", parse_constant=_refuse_constant)
    except ValueError as exc:
        raise errors.ConfigError(f"field 'args' is not a JSON object: {exc}") from exc
    if not isinstance(args, dict):
        raise errors.ConfigError("field 'args' must be a JSON object, e.g. {\"amount\": 120}")
    cost = _cost(form.get("cost", ""))
    served = services.of(request)
    environment = form.get("environment", "").strip() or None
    ref = form.get("ref", "").strip()
    if not ref:
        ask = deciding.Request(name if target == "instance" else "", tool, args, cost, form.get("run") or None)
        version = name if target == "version" else None
        answered = await asyncio.to_thread(served.decider.simulate, ask, you.tenant, version=version, environment=environment)
        answer = answered.as_dict()
    else:
        answer = (await asyncio.to_thread(_at_ref, served, you, ref, target, name, tool, args, cost, environment)).as_dict()
    return web.page(request, "simulate.html", you, title="Policy simulator", form=form, answer=answer)


def _at_ref(
    served: services.Services, you: web.Viewer, ref: str, target: str, name: str, tool: str, args: dict[str, Any],
    cost: float, environment: str | None,
) -> simulating.Answer:  # fmt: skip
    """The simulator under ``ref``: an instance keeps its state (and its tenant's kill switch) and
    environment as stored, its version as Git says at that ref."""
    if served.source is None:
        raise errors.ConfigError("this server reads no fleet repository: leave 'ref' empty to ask the applied commit")
    if target == "version":
        return simulating.decide_at(served.source, ref, you.tenant, name, tool, args, cost, environment=environment)
    with database.reading(served.db) as connection:
        detail = reporting.instance(connection, name)
    if detail["tenant"] != you.tenant:
        raise errors.NotFound(f"instance {name!r} does not exist in tenant {you.tenant!r}")
    state = detail["state"]
    if detail["tenant_hold"] and state not in ("PAUSED", "QUARANTINED", "RETIRED"):
        state = detail["tenant_hold"]  # the state the kill switch holds the tenant's instances in
    caller = {"id": detail["id"], "state": state}
    return simulating.decide_at(
        served.source, ref, you.tenant, detail["version"], tool, args, cost, environment=detail["environment"], instance=caller
    )


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _cost(raw: str) -> float:
    if not raw.strip():
        return 0.0
    try:
        cost = float(raw)
    except ValueError as exc:
        raise errors.ConfigError(f"field 'cost' is not a number: {raw!r}") from exc
    if not math.isfinite(cost) or cost < 0 or cost > money.MAX_AMOUNT:
        raise errors.ConfigError(f"field 'cost' must be a finite number from 0 to {money.MAX_AMOUNT:g}")
    return cost
