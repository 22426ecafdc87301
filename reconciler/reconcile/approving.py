"""Deciding approvals: an operator approves or denies what a gate asked for.

A decision is refused unless the operator is declared in the applied commit, is active, holds one
of the approval's roles, and the approval is still pending; an operator decides once. Each
decision writes ``APPROVAL_DECIDED`` to the tenant's chain and bumps the fleet's state
generation, so the next reconcile of the same commit takes the step the approval unblocked.

:func:`sweep` is the periodic job (the server runs it; so does ``armctl approvals sweep``): a
pending request past its TTL becomes EXPIRED (``APPROVAL_EXPIRED``), and one undecided past its
escalation time may from then on also be decided by its envelope's ``escalateTo`` roles
(``APPROVAL_ESCALATED``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.state import fleetstate, tables

__all__ = ["Decision", "Swept", "decide", "list_approvals", "roles_of", "sweep"]


@dataclasses.dataclass(frozen=True)
class Decision:
    approval_id: int
    status: str
    approvals: int
    required: int
    subject_kind: str = ""  # ToolCall for a runtime's call, else the kind of the gated object


def list_approvals(
    connection: sa.Connection, status: str | None = "PENDING", tenant: str | None = None, approval_id: int | None = None
) -> list[dict[str, Any]]:
    a = tables.approvals.c
    query = sa.select(tables.approvals).order_by(a.id)
    if approval_id is not None:
        query = query.where(a.id == approval_id)
    if status:
        query = query.where(a.status == status.upper())
    if tenant:
        query = query.where(a.tenant == tenant)
    return [dict(row) for row in connection.execute(query).mappings()]


def roles_of(row: Any) -> list[str]:
    """The roles that may decide an approval now: its approver roles, widened once escalated."""
    roles = list(row["approver_roles"])
    if row["escalated_at"] is not None:
        roles.extend(r for r in row["escalate_to"] or () if r not in roles)
    return roles


def operator_roles(connection: sa.Connection, tenant: str, operator: str) -> list[str]:
    o = tables.operators.c
    row = connection.execute(sa.select(o.spec, o.status).where(o.tenant == tenant, o.name == operator)).first()
    if row is None or row.status != "ACTIVE":
        raise errors.Forbidden(f"operator {operator!r} is not declared in tenant {tenant!r}")
    return list(row.spec.get("roles", []))


def decide(
    connection: sa.Connection,
    approval_id: int,
    operator: str,
    decision: str,
    justification: str,
    now: dt.datetime,
) -> Decision:
    """Record ``operator``'s APPROVE or DENY on a pending approval, in the caller's transaction."""
    decision = decision.upper()
    if decision not in ("APPROVE", "DENY"):
        raise errors.ConfigError(f"a decision is APPROVE or DENY, not {decision!r}")
    a = tables.approvals
    row = connection.execute(sa.select(a).where(a.c.id == approval_id).with_for_update()).mappings().first()
    if row is None:
        raise errors.NotFound(f"approval {approval_id} does not exist")
    if row["status"] != "PENDING":
        raise errors.Forbidden(f"approval {approval_id} is {row['status']}, not PENDING")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise errors.Forbidden(f"approval {approval_id} expired at {row['expires_at'].isoformat()}")
    roles = operator_roles(connection, row["tenant"], operator)
    allowed = set(roles_of(row))
    if not allowed & set(roles):
        raise errors.Forbidden(
            f"operator {operator!r} holds {', '.join(roles) or 'no roles'}; approval {approval_id} needs one of {', '.join(sorted(allowed))}"
        )
    decisions = list(row["decisions"])
    if any(d["operator"] == operator for d in decisions):
        raise errors.Forbidden(f"operator {operator!r} has already decided approval {approval_id}")
    decisions.append({"operator": operator, "decision": decision, "justification": justification, "at": now.isoformat()})
    approvers = {d["operator"] for d in decisions if d["decision"] == "APPROVE"}
    if decision == "DENY":
        status = "DENIED"
    elif len(approvers) >= row["required"]:
        status = "APPROVED"
    else:
        status = "PENDING"
    connection.execute(
        a.update()
        .where(a.c.id == approval_id)
        .values(decisions=decisions, status=status, decided_at=now if status != "PENDING" else None)
    )
    chain.append(
        connection,
        [
            chain.Record(
                tenant=row["tenant"],
                type="APPROVAL_DECIDED",
                object_kind="Approval",
                object_name=str(approval_id),
                before={"status": row["status"], "approvals": len(approvers) - (decision == "APPROVE")},
                after={
                    "status": status,
                    "decision": decision,
                    "justification": justification,
                    "subject": {"kind": row["subject_kind"], "name": row["subject_name"]},
                    "transition": row["transition"],
                    "approvals": len(approvers),
                    "required": row["required"],
                },
                operator=operator,
            )
        ],
        now,
    )
    fleetstate.bump_generation(connection)
    return Decision(approval_id, status, len(approvers), row["required"], row["subject_kind"])


@dataclasses.dataclass(frozen=True)
class Swept:
    expired: list[int]
    escalated: list[int]


def sweep(connection: sa.Connection, now: dt.datetime) -> Swept:
    """Expire and escalate due pending approvals, in the caller's transaction."""
    a = tables.approvals
    due = (
        connection.execute(
            sa.select(a)
            .where(
                a.c.status == "PENDING",
                sa.or_(a.c.expires_at <= now, sa.and_(a.c.escalate_at <= now, a.c.escalated_at.is_(None))),
            )
            .order_by(a.c.id)
            .with_for_update()
        )
        .mappings()
        .all()
    )
    expired: list[int] = []
    escalated: list[int] = []
    records: list[chain.Record] = []
    for row in due:
        subject = {"kind": row["subject_kind"], "name": row["subject_name"]}
        if row["expires_at"] is not None and row["expires_at"] <= now:
            connection.execute(a.update().where(a.c.id == row["id"]).values(status="EXPIRED", decided_at=now))
            expired.append(row["id"])
            records.append(
                chain.Record(
                    tenant=row["tenant"],
                    type="APPROVAL_EXPIRED",
                    object_kind="Approval",
                    object_name=str(row["id"]),
                    before={"status": "PENDING"},
                    after={
                        "status": "EXPIRED",
                        "expiredAt": row["expires_at"].isoformat(),
                        "subject": subject,
                        "transition": row["transition"],
                        "approvals": sum(1 for d in row["decisions"] if d["decision"] == "APPROVE"),
                        "required": row["required"],
                    },
                )
            )
            continue
        widened = roles_of({**row, "escalated_at": now})
        connection.execute(a.update().where(a.c.id == row["id"]).values(escalated_at=now))
        escalated.append(row["id"])
        records.append(
            chain.Record(
                tenant=row["tenant"],
                type="APPROVAL_ESCALATED",
                object_kind="Approval",
                object_name=str(row["id"]),
                before={"roles": list(row["approver_roles"])},
                after={"roles": widened, "subject": subject, "transition": row["transition"]},
            )
        )
    if records:
        chain.append(connection, records, now)
        fleetstate.bump_generation(connection)
    return Swept(expired, escalated)
