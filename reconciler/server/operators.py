"""What operators do over HTTP: approvals, emergency controls, and the instances they act on.

``GET /v1/approvals[/{id}]`` and ``POST /v1/approvals/{id}/decision``; ``POST
/v1/instances/{id}/controls`` and ``POST /v1/tenants/{tenant}/controls`` (the kill switch);
``GET /v1/instances`` (runtimes read it too: which instances to run). Each handler authorises the
token (``server.auth``) and calls ``oversight`` in one transaction — the same functions the CLI
runs — then tells the decider, so the next decision of this process sees what changed.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import datetime as dt
from typing import Annotated, Any, Literal

import fastapi
import pydantic

from reconciler import errors
from reconciler.oversight import access, approving, holds
from reconciler.reconcile import reporting
from reconciler.server import auth, services
from reconciler.state import database

__all__ = ["ApprovalDecisionBody", "ControlBody", "TenantControlBody", "control_as", "decide_as", "router", "tenant_control_as"]

router = fastapi.APIRouter()


def _justified(text: str) -> str:
    if not text.strip():
        raise ValueError("say why the request is approved or denied; a justification may not be blank")
    return text.strip()


class ApprovalDecisionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    decision: Literal["APPROVE", "DENY"]
    #: Required for both: it is what the audit trail says about the decision.
    justification: Annotated[str, pydantic.AfterValidator(_justified)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


#: ``GET /v1/approvals?status=``: any case; every status of ``approving.STATUSES``, or ALL.
ApprovalStatus = Annotated[Literal["PENDING", "APPROVED", "DENIED", "EXPIRED", "USED", "ALL"], pydantic.BeforeValidator(_upper)]


#: ``GET /v1/instances?state=``: any case; one of the instance lifecycle's states.
InstanceState = Annotated[
    Literal["PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"],
    pydantic.BeforeValidator(_upper),
]


class ControlBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    control: Literal["pause", "resume", "quarantine", "read-only", "drain"]
    reason: str = ""


class TenantControlBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    control: Literal["pause", "resume", "quarantine"]
    reason: str = ""


#: An approval's id in a path: a positive 64-bit integer (the store's), else 422 naming it.
ApprovalId = Annotated[int, fastapi.Path(ge=1, le=2**63 - 1)]


def _unseen(approval_id: int, who: access.Principal) -> errors.NotFound:
    # The same answer whether the approval does not exist or the token may not see it.
    if who.instances is not None:
        return errors.NotFound(f"approval {approval_id} does not exist for the instances of token {who.name!r}")
    return errors.NotFound(f"approval {approval_id} does not exist in tenant {who.tenant!r}")


def _approval(row: dict[str, Any]) -> dict[str, Any]:
    """An approval as the API shows it: camelCase like every other answer, each fact once
    (``approverRoles``: who may decide it now, escalation included; ``reasons``: why it waits)."""
    out = {
        _CAMEL.get(k, k): v.isoformat() if isinstance(v, dt.datetime) else v
        for k, v in row.items()
        if k not in ("reason", "approver_roles")
    }
    out["approvals"] = sum(1 for d in row["decisions"] if d["decision"] == "APPROVE")
    out["approverRoles"] = approving.roles_of(row)
    return out


#: The table's column names that the API spells in camelCase.
_CAMEL = {
    "subject_kind": "subjectKind",
    "subject_name": "subjectName",
    "requested_sha": "requestedSha",
    "created_at": "createdAt",
    "expires_at": "expiresAt",
    "decided_at": "decidedAt",
    "escalate_at": "escalateAt",
    "escalate_to": "escalateTo",
    "escalated_at": "escalatedAt",
}


@router.get("/v1/approvals")
def list_approvals(request: fastapi.Request, who: auth.Who, status: ApprovalStatus = "PENDING") -> list[dict[str, Any]]:
    """The approvals the token may see (an instance-scoped token: its instances' tool calls),
    each with the call asked (``request``: tool, redacted args, cost estimate, run) and
    ``reasons``; pending ones unless ``status`` says otherwise (``all``: every one)."""
    with database.reading(services.of(request).db) as connection:
        rows = approving.list_approvals(connection, None if status == "ALL" else status, who.tenant, instances=who.instances)
    return [_approval(r) for r in rows]


@router.get("/v1/approvals/{approval_id}")
def get_approval(request: fastapi.Request, approval_id: ApprovalId, who: auth.Who) -> dict[str, Any]:
    with database.reading(services.of(request).db) as connection:
        rows = approving.list_approvals(connection, None, who.tenant, approval_id, instances=who.instances)
    if not rows:
        raise _unseen(approval_id, who)
    return _approval(rows[0])


@router.post("/v1/approvals/{approval_id}/decision")
def decide_approval(
    request: fastapi.Request, approval_id: ApprovalId, body: ApprovalDecisionBody, who: auth.Who
) -> dict[str, Any]:
    """An operator's APPROVE or DENY with its justification (422 without one); 409 when the
    approval is no longer pending, 403 when the operator may not decide it."""
    result = decide_as(services.of(request), who, approval_id, body.decision, body.justification)
    return {"id": result.approval_id, "status": result.status, "approvals": result.approvals, "required": result.required}


def decide_as(
    served: services.Services, who: access.Principal, approval_id: int, decision: str, justification: str
) -> approving.Decision:
    """``who`` decides approval ``approval_id``: the API's route and the console's form both come here."""
    operator = auth.operator_of(who)
    with database.transaction(served.db) as connection:
        # Another tenant's approval, or (an instance-scoped token) another instance's: 404 as
        # for one that does not exist, as the GET routes answer.
        if not approving.visible(connection, approval_id, who.tenant, who.instances):
            raise _unseen(approval_id, who)
        result = approving.decide(connection, approval_id, operator, decision, justification, served.clock.now())
    served.decider.invalidate()  # the next decision of this process sees the approval
    return result


@router.post("/v1/instances/{instance_id}/controls")
def control(request: fastapi.Request, instance_id: str, body: ControlBody, who: auth.Who) -> dict[str, Any]:
    done = control_as(services.of(request), who, instance_id, body.control, body.reason)
    return {"instance": done.instance, "before": done.before, "after": done.after}


def control_as(served: services.Services, who: access.Principal, instance_id: str, control: str, reason: str) -> holds.Controlled:
    """``who`` pulls an emergency control on ``instance_id``: the API's route and the console's form both come here."""
    operator = auth.operator_of(who)
    with database.transaction(served.db) as connection:
        # Another tenant's instance is answered as one that does not exist: a token cannot
        # learn which instance ids other tenants have.
        if holds.instance_tenant(connection, instance_id) != who.tenant:
            raise errors.NotFound(f"instance {instance_id!r} does not exist in tenant {who.tenant!r}")
        done = holds.control_instance(connection, instance_id, control, operator, reason, served.clock.now())
    served.decider.invalidate()  # the very next decision of this process sees the control
    return done


@router.post("/v1/tenants/{tenant}/controls")
def tenant_control(request: fastapi.Request, tenant: str, body: TenantControlBody, who: auth.Who) -> dict[str, Any]:
    done = tenant_control_as(services.of(request), who, tenant, body.control, body.reason)
    return {"tenant": tenant, "instances": [{"instance": d.instance, "before": d.before, "after": d.after} for d in done]}


def tenant_control_as(
    served: services.Services, who: access.Principal, tenant: str, control: str, reason: str
) -> list[holds.Controlled]:
    """``who`` pulls (or releases) ``tenant``'s kill switch: the API's route and the console's form both come here."""
    operator = auth.operator_of(who)
    if tenant != who.tenant:
        raise errors.Forbidden(f"token {who.name!r} acts for tenant {who.tenant!r}, not {tenant!r}")
    with database.transaction(served.db) as connection:
        done = holds.control_tenant(connection, tenant, control, operator, reason, served.clock.now())
    served.decider.invalidate()
    return done


@router.get("/v1/instances")
def list_instances(
    request: fastapi.Request,
    who: auth.Who,
    tenant: str | None = None,
    environment: str | None = None,
    deployment: str | None = None,
    state: InstanceState | None = None,
) -> list[dict[str, Any]]:
    if tenant is not None and tenant != who.tenant:
        raise errors.Forbidden(f"token {who.name!r} acts for tenant {who.tenant!r}, not {tenant!r}")
    with database.reading(services.of(request).db) as connection:
        rows = reporting.instances(connection, tenant=who.tenant, environment=environment, deployment=deployment, state=state)
    return [row for row in rows if who.instances is None or row["id"] in who.instances]
