"""Approvals: what gates and tool calls ask for, and operators approving or denying it.

Three kinds of subjects wait for approvals: a gated lifecycle step of the GitOps reconcile (its
requests are planned and written with the rest of an apply, by ``reconcile.applying``), a
runtime's tool call that its policy answered NEEDS_APPROVAL (requested here, by
:func:`request_call`, in the decision's transaction; used once by :func:`use_granted_call`) and a
commit whose policy widens a governed tenant's decisions (:func:`request_policy_change`, by
``reconcile.governing``). All are decided, listed, expired and escalated here.

A decision is refused unless the operator is declared in the applied commit, is active, holds one
of the approval's roles, and the approval is still pending; an operator decides once. Each
decision needs a justification (what the audit trail will say), and writes ``APPROVAL_DECIDED``
to the tenant's chain and bumps the fleet's state generation, so the next reconcile of the same
commit takes the step the approval unblocked. Deciding one that is no longer pending is a
:class:`~reconciler.errors.Conflict`, not a refusal of the operator.

What an approver decides is shown with the approval: for a tool call, the call as
``decisions.deciding`` recorded it (:func:`requested_call`: instance, tool, redacted arguments,
cost estimate, run) and the reasons it needs approval. They live in the ``after`` of the
request's ``APPROVAL_REQUESTED`` change record, written in the same transaction as the approval:
append-only and hash-chained, so what an approver saw is what the audit trail says was asked,
and never pruned (op events, which hold the same call, are).

:func:`sweep` is the periodic job (the server runs it; so does ``armctl approvals sweep``): a
pending request past its TTL becomes EXPIRED (``APPROVAL_EXPIRED``), and one undecided past its
escalation time may from then on also be decided by its envelope's ``escalateTo`` roles
(``APPROVAL_ESCALATED``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.oversight import access
from reconciler.state import fleetstate, locking, tables

__all__ = [
    "POLICY_CHANGE",
    "STATUSES",
    "WIDENING",
    "Decision",
    "Swept",
    "check_status",
    "decide",
    "list_approvals",
    "lock_call",
    "pending_call",
    "pending_count",
    "policy_change",
    "request_call",
    "request_policy_change",
    "requested_call",
    "roles_of",
    "sweep",
    "use_granted_call",
    "visible",
]

#: Every status an approval can have: PENDING until decided (or EXPIRED); a tool call's approval
#: becomes USED by the one call it allows.
STATUSES = ("PENDING", "APPROVED", "DENIED", "EXPIRED", "USED")
#: The subject and transition of a policy change's approval (``reconcile.governing``).
POLICY_CHANGE = "PolicyChange"
WIDENING = "widening"
#: Policy-change approvals are kept open this long (a week): a change waits for people, not a timer.
POLICY_CHANGE_TTL = dt.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class Decision:
    approval_id: int
    status: str
    approvals: int
    required: int
    subject_kind: str = ""  # ToolCall for a runtime's call, else the kind of the gated object


def requested_call(instance: str, tool: str, args: Any, cost_estimate: float, run_id: str | None) -> dict[str, Any]:
    """A tool call as its approval request records it, ``args`` already redacted
    (``risk.redact_args``), as JSON stores it (a non-finite number, which JSON cannot hold,
    becomes null), so the hash-chained record reads back exactly as it was hashed."""
    call = {"instance": instance, "tool": tool, "args": args, "costEstimate": cost_estimate, "runId": run_id}
    stored: dict[str, Any] = orjson.loads(orjson.dumps(call, option=orjson.OPT_NON_STR_KEYS))
    return stored


def _call_match(tenant: str, instance: str, key: str) -> tuple[Any, ...]:
    a = tables.approvals.c
    return (a.tenant == tenant, a.subject_kind == "ToolCall", a.subject_name == instance, a.transition == key)


def lock_call(connection: sa.Connection, tenant: str, instance: str, key: str) -> None:
    """Serialise, until the transaction ends, the decisions of one call (same instance, same
    tool and arguments): an approval must allow exactly one call."""
    locking.lock_in_transaction(connection, f"arm-call:{tenant}:{instance}:{key}")


def use_granted_call(connection: sa.Connection, tenant: str, instance: str, key: str, now: dt.datetime) -> int | None:
    """Mark the oldest APPROVED approval of this call USED and return its id; None when another
    call used it first (or there is none)."""
    a = tables.approvals
    row = connection.execute(
        sa.select(a.c.id).where(*_call_match(tenant, instance, key), a.c.status == "APPROVED").order_by(a.c.id)
    ).first()
    if row is None:
        return None
    used = connection.execute(a.update().where(a.c.id == row.id, a.c.status == "APPROVED").values(status="USED", decided_at=now))
    return int(row.id) if used.rowcount else None


def pending_call(connection: sa.Connection, tenant: str, instance: str, key: str) -> int | None:
    """The PENDING approval already requested for this call, if any."""
    a = tables.approvals
    row = connection.execute(sa.select(a.c.id).where(*_call_match(tenant, instance, key), a.c.status == "PENDING")).first()
    return None if row is None else int(row.id)


def _request(
    connection: sa.Connection,
    tenant: str,
    row: dict[str, Any],
    after: dict[str, Any],
    now: dt.datetime,
    sha: str | None = None,
) -> int:
    """Write a PENDING approval (``row``: its subject, transition, rules and expiry) and its
    ``APPROVAL_REQUESTED`` record (``after``: what the approver is shown), in one transaction."""
    a = tables.approvals
    values = {"tenant": tenant, "status": "PENDING", "decisions": [], "requested_sha": sha, "created_at": now, **row}
    approval_id = int(connection.execute(a.insert().returning(a.c.id), values).scalar_one())
    record = chain.Record(
        tenant=tenant, type="APPROVAL_REQUESTED", object_kind="Approval", object_name=str(approval_id), after=after, sha=sha
    )
    chain.append(connection, [record], now)
    return approval_id


def request_call(
    connection: sa.Connection,
    tenant: str,
    key: str,
    call: dict[str, Any],
    reasons: list[str],
    rules: dict[str, Any],
    now: dt.datetime,
) -> int:
    """Request approval of a tool call (``call`` as :func:`requested_call` makes it, ``reasons``
    redacted), under the envelope's approval ``rules``; writes ``APPROVAL_REQUESTED``."""
    roles = rules.get("approverRoles") or access.approver_roles(connection, tenant)
    ttl = rules.get("ttlSeconds") or 3600
    escalate, escalate_to = rules.get("escalateAfterSeconds"), rules.get("escalateTo")
    row = {
        "subject_kind": "ToolCall",
        "subject_name": call["instance"],
        "transition": key,
        "required": rules.get("requiredApprovals") or 1,
        "approver_roles": roles,
        "reason": "; ".join(reasons),
        "expires_at": now + dt.timedelta(seconds=ttl),
        "escalate_at": now + dt.timedelta(seconds=escalate) if escalate and escalate_to else None,
        "escalate_to": escalate_to if escalate and escalate_to else None,
    }
    after = {
        "subject": {"kind": "ToolCall", "instance": call["instance"], "tool": call["tool"]},
        "request": call,
        "reasons": reasons,
        "roles": roles,
    }
    return _request(connection, tenant, row, after, now)


def policy_change(connection: sa.Connection, tenant: str, sha: str) -> Any:
    """The newest approval of the policy change at commit ``sha`` for ``tenant`` (id, status), or None."""
    a = tables.approvals.c
    query = sa.select(a.id, a.status).where(
        a.tenant == tenant, a.subject_kind == POLICY_CHANGE, a.subject_name == sha, a.transition == WIDENING
    )
    return connection.execute(query.order_by(a.id.desc()).limit(1)).first()


def request_policy_change(
    connection: sa.Connection,
    tenant: str,
    sha: str,
    revision: str,
    rule: dict[str, Any],
    flips: list[dict[str, Any]],
    summary: str,
    now: dt.datetime,
) -> int:
    """Request approval of a commit whose policy widens ``tenant``'s decisions (``flips``, as the
    impact lists them), under the tenant's ``spec.policyChanges.widening`` ``rule``; writes
    ``APPROVAL_REQUESTED`` naming the flips. Kept open a week: a change waits for people."""
    roles = list(rule.get("approverRoles") or [])
    required = rule.get("requiredApprovals") or 1
    row = {
        "subject_kind": POLICY_CHANGE,
        "subject_name": sha,
        "transition": WIDENING,
        "required": required,
        "approver_roles": roles,
        "reason": f"the policy change of {revision} widens decisions: {summary}",
        "expires_at": now + POLICY_CHANGE_TTL,
    }
    after = {
        "subject": {"kind": POLICY_CHANGE, "name": sha},
        "transition": WIDENING,
        "revision": revision,
        "flips": [{k: f[k] for k in ("tool", "from", "to", "scope", "count")} for f in flips],
        "required": required,
        "roles": roles,
    }
    return _request(connection, tenant, row, after, now, sha=sha)


def visible(connection: sa.Connection, approval_id: int, tenant: str, instances: Collection[str] | None) -> bool:
    """Whether approval ``approval_id`` is ``tenant``'s and (``instances``: a scoped token's) one of
    those instances' tool calls: what a caller may see and decide."""
    a = tables.approvals.c
    row = connection.execute(sa.select(a.subject_kind, a.subject_name).where(a.id == approval_id, a.tenant == tenant)).first()
    return row is not None and (instances is None or (row.subject_kind == "ToolCall" and row.subject_name in instances))


def pending_count(connection: sa.Connection) -> int:
    """How many approvals wait for a decision, in every tenant."""
    a = tables.approvals.c
    return int(connection.execute(sa.select(sa.func.count()).where(a.status == "PENDING")).scalar_one())


def check_status(status: str) -> str:
    """``status`` as stored (upper case); ``errors.ConfigError`` names the allowed ones."""
    if status.upper() not in STATUSES:
        allowed = ", ".join(s.lower() for s in STATUSES)
        raise errors.ConfigError(f"status {status!r} is not one of {allowed} (or all)")
    return status.upper()


def list_approvals(
    connection: sa.Connection,
    status: str | None = "PENDING",
    tenant: str | None = None,
    approval_id: int | None = None,
    instances: Collection[str] | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Approvals by id, each with ``request`` (the tool call asked; None for a gate's approval)
    and ``reasons``. ``instances``: only the tool calls of these instances (a scoped token);
    ``limit`` and ``offset``: one page of them (the console's)."""
    a = tables.approvals.c
    query = sa.select(tables.approvals).order_by(a.id)
    if approval_id is not None:
        query = query.where(a.id == approval_id)
    if status:
        query = query.where(a.status == check_status(status))
    if tenant:
        query = query.where(a.tenant == tenant)
    if instances is not None:
        query = query.where(a.subject_kind == "ToolCall", a.subject_name.in_(sorted(instances)))
    if limit is not None:
        query = query.limit(limit).offset(offset)
    rows = [dict(row) for row in connection.execute(query).mappings()]
    requested = _requested(connection, [r for r in rows if r["subject_kind"] == "ToolCall"])
    for row in rows:
        after = requested.get((row["tenant"], str(row["id"])))
        if row["subject_kind"] != "ToolCall":
            row["request"] = None
        elif after is not None and "request" in after:
            row["request"] = after["request"]
        else:  # requested before calls were recorded with their approval: what the record names
            subject = (after or {}).get("subject") or {}
            tool = subject.get("tool")
            row["request"] = {"instance": row["subject_name"], "tool": tool, "args": None, "costEstimate": None, "runId": None}
        reasons = (after or {}).get("reasons")
        row["reasons"] = list(reasons) if reasons is not None else [row["reason"]] if row["reason"] else []
    return rows


#: Approval ids looked up per query (well under SQLite's and PostgreSQL's bound parameters).
_CHUNK = 500


def _requested(connection: sa.Connection, rows: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """The ``after`` of each tool-call approval's ``APPROVAL_REQUESTED`` record, by (tenant, id)."""
    c = tables.change_records.c
    found: dict[tuple[str, str], Any] = {}
    for start in range(0, len(rows), _CHUNK):
        names = sorted({str(r["id"]) for r in rows[start : start + _CHUNK]})
        tenants = sorted({r["tenant"] for r in rows[start : start + _CHUNK]})
        query = sa.select(c.tenant, c.object_name, c.after).where(
            c.object_kind == "Approval", c.object_name.in_(names), c.type == "APPROVAL_REQUESTED", c.tenant.in_(tenants)
        )
        for record in connection.execute(query):
            found.setdefault((record.tenant, record.object_name), record.after)
    return found


def roles_of(row: Any) -> list[str]:
    """The roles that may decide an approval now: its approver roles, widened once escalated."""
    roles = list(row["approver_roles"])
    if row["escalated_at"] is not None:
        roles.extend(r for r in row["escalate_to"] or () if r not in roles)
    return roles


def decide(
    connection: sa.Connection,
    approval_id: int,
    operator: str,
    decision: str,
    justification: str,
    now: dt.datetime,
) -> Decision:
    """Record ``operator``'s APPROVE or DENY, with why, on a pending approval, in the caller's
    transaction. ``errors.Conflict`` when the approval is no longer pending (or this operator
    has decided it already); ``errors.Forbidden`` when the operator may not decide it."""
    decision = decision.upper()
    if decision not in ("APPROVE", "DENY"):
        raise errors.ConfigError(f"a decision is APPROVE or DENY, not {decision!r}")
    justification = justification.strip()
    if not justification:
        raise errors.ConfigError("justification: say why the request is approved or denied (it may not be blank)")
    a = tables.approvals
    row = connection.execute(sa.select(a).where(a.c.id == approval_id).with_for_update()).mappings().first()
    if row is None:
        raise errors.NotFound(f"approval {approval_id} does not exist")
    # Who may decide first: an operator without a permitted role is refused (403) whatever the
    # approval's state; one who may decide learns that it cannot be decided any more (409).
    roles = access.operator_roles(connection, row["tenant"], operator)
    allowed = set(roles_of(row))
    if not allowed & set(roles):
        raise errors.Forbidden(
            f"operator {operator!r} holds {', '.join(roles) or 'no roles'}; approval {approval_id} needs one of {', '.join(sorted(allowed))}"
        )
    if row["status"] != "PENDING":
        raise errors.Conflict(f"approval {approval_id} is {row['status']}, not PENDING")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise errors.Conflict(f"approval {approval_id} expired at {row['expires_at'].isoformat()}")
    decisions = list(row["decisions"])
    if any(d["operator"] == operator for d in decisions):
        raise errors.Conflict(f"operator {operator!r} has already decided approval {approval_id}")
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
