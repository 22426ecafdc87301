"""Deciding tool calls: resolve the caller, ask the policy, record the answer before giving it.

``Decider.decide`` resolves instance → version → template → environment → tenant from the
applied commit, takes the version's effective envelope (stored at apply), assesses the call's
risk, counts what the instance spent and how often it made this very call, and evaluates
``data.arm.decision.result``. In the same transaction it records the decision as an op event
(arguments redacted), a DENY also as a change record (``BUDGET_EXCEEDED``, ``LOOP_DETECTED`` or
``POLICY_EVALUATED``), and a NEEDS_APPROVAL as an approval request the runtime can poll; an
approved request allows exactly that call, once. Nothing is answered that was not committed.
The policy is the applied commit's: the library plus the fleet modules stored at apply.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler.audit import chain
from reconciler.policy import deciding, engines, library, risk
from reconciler.state import fleetstate, opevents, tables

__all__ = ["Decider", "Decision", "Request"]

_APPROVER_PERMISSIONS = {"approvals:decide", "approvals:*", "*:*"}


@dataclasses.dataclass(frozen=True)
class Request:
    instance: str
    tool: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost_estimate: float = 0.0
    run_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    decision: str
    reasons: list[str]
    decision_id: int
    policy_revision: str | None
    approval_id: int | None = None
    envelope: Mapping[str, Any] | None = None
    risk: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "decision": self.decision,
            "reasons": self.reasons,
            "decisionId": self.decision_id,
            "policyRevision": self.policy_revision,
            "envelope": self.envelope,
            "risk": self.risk,
        }
        if self.approval_id is not None:
            body["approvalId"] = self.approval_id
        return body


class Decider:
    def __init__(self, db: sa.Engine, *, engine: engines.Engine | None = None, clock: clock_.Clock | None = None) -> None:
        self.db = db
        self.engine = engine or engines.EmbeddedEngine()
        self.clock = clock or clock_.SystemClock()

    def ensure_policy(self, connection: sa.Connection) -> None:
        """Load the applied commit's policy into the engine if it is not loaded yet."""
        state = fleetstate.read(connection) or {}
        self._policy(connection, state.get("applied_sha"))

    def _policy(self, connection: sa.Connection, revision: str | None) -> None:
        if revision is not None and self.engine.revision == revision:
            return
        c = tables.policy_modules.c
        fleet = {row.path: row.text for row in connection.execute(sa.select(c.path, c.text))}
        self.engine.load(engines.Bundle(library.modules_for(fleet, tests=False), {}, revision or "none"))

    def decide(self, request: Request) -> Decision:
        now = self.clock.now()
        with self.db.begin() as connection:
            state = fleetstate.read(connection) or {}
            revision = state.get("applied_sha")
            self._policy(connection, revision)
            context, tenant, version = self._context(connection, request, now)
            key = deciding.call_key(request.tool, request.args)
            document, assessment = deciding.build_input(context, request.tool, request.args, request.cost_estimate)
            if context.instance is not None and context.envelope is _MISSING:
                # Fail closed: a version without its envelope was never fully applied.
                outcome = deciding.Outcome(
                    "DENY", [f"version {version} has no effective envelope yet: apply the fleet again"], assessment
                )
            else:
                outcome = deciding.evaluate(self.engine, document, assessment)
            approval_id = self._approvals(connection, request, tenant, key, outcome, context, now)
            payload = {
                "tool": request.tool,
                "args": risk.redact(dict(request.args)),
                "decision": outcome.decision,
                "reasons": outcome.reasons,
                "risk": assessment.as_dict(),
                "callKey": key,
                "runId": request.run_id,
                "costEstimate": request.cost_estimate,
                "approvalId": approval_id,
                "policyRevision": revision,
                "version": version,
            }
            decision_id = connection.execute(
                tables.op_events.insert().returning(tables.op_events.c.id),
                {"tenant": tenant or "", "at": now, "type": "DECISION", "instance": request.instance, "payload": payload},
            ).scalar_one()
            if outcome.decision == "DENY" and tenant is not None:
                chain.append(
                    connection,
                    [
                        chain.Record(
                            tenant=tenant,
                            type=_deny_type(outcome.reasons),
                            object_kind="Instance",
                            object_name=request.instance,
                            after={
                                "decision": "DENY",
                                "tool": request.tool,
                                "reasons": outcome.reasons,
                                "decisionId": decision_id,
                            },
                        )
                    ],
                    now,
                )
        return Decision(
            outcome.decision, outcome.reasons, decision_id, revision, approval_id, context.envelope, assessment.as_dict()
        )

    # ---------------------------------------------------------------- resolving

    def _context(
        self, connection: sa.Connection, request: Request, now: dt.datetime
    ) -> tuple[deciding.Context, str | None, str | None]:
        i = tables.instances.c
        instance = connection.execute(
            sa.select(i.id, i.tenant, i.state, i.version, i.environment, i.template).where(i.id == request.instance)
        ).first()
        if instance is None:
            return deciding.Context(None, {"name": None, "production": False}, None, _EMPTY_ENVELOPE), None, None
        tenant = instance.tenant
        v = tables.agent_versions.c
        envelope = (
            connection.execute(sa.select(v.envelope).where(v.tenant == tenant, v.name == instance.version)).scalar() or _MISSING
        )
        e = tables.environments.c
        env_spec = connection.execute(sa.select(e.spec).where(e.tenant == tenant, e.name == instance.environment)).scalar() or {}
        tool = None
        t = tables.tool_catalogs.c
        for spec in connection.execute(sa.select(t.spec).where(t.tenant == tenant, t.status == "ACTIVE")).scalars():
            tool = next((entry for entry in spec.get("tools", []) if entry.get("name") == request.tool), None)
            if tool is not None:
                break
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        spent_run, spent_day = opevents.spent(connection, tenant, request.instance, request.run_id, day_start)
        window = (envelope.get("loop") or {}).get("windowSeconds") or 60
        key = deciding.call_key(request.tool, request.args)
        same = opevents.calls_since(connection, tenant, request.instance, key, now - dt.timedelta(seconds=window))
        a = tables.approvals.c
        granted = connection.execute(
            sa.select(a.id).where(
                a.tenant == tenant,
                a.subject_kind == "ToolCall",
                a.subject_name == request.instance,
                a.transition == key,
                a.status == "APPROVED",
            )
        ).first()
        context = deciding.Context(
            instance={
                "id": instance.id,
                "state": instance.state,
                "tenant": tenant,
                "template": instance.template,
                "version": instance.version,
            },
            environment={"name": instance.environment, "production": bool(env_spec.get("production"))},
            tool=tool,
            envelope=envelope,
            spent_run=spent_run,
            spent_day=spent_day,
            same_calls=same,
            approval_granted=granted is not None,
        )
        return context, tenant, instance.version

    # ---------------------------------------------------------------- approvals

    def _approvals(
        self,
        connection: sa.Connection,
        request: Request,
        tenant: str | None,
        key: str,
        outcome: deciding.Outcome,
        context: deciding.Context,
        now: dt.datetime,
    ) -> int | None:
        if tenant is None:
            return None
        a = tables.approvals
        match = (
            a.c.tenant == tenant,
            a.c.subject_kind == "ToolCall",
            a.c.subject_name == request.instance,
            a.c.transition == key,
        )
        if outcome.decision == "ALLOW" and context.approval_granted:
            row = connection.execute(sa.select(a.c.id).where(*match, a.c.status == "APPROVED").order_by(a.c.id)).first()
            if row is not None:
                connection.execute(a.update().where(a.c.id == row.id).values(status="USED", decided_at=now))
                return int(row.id)
        if outcome.decision != "NEEDS_APPROVAL":
            return None
        pending = connection.execute(sa.select(a.c.id).where(*match, a.c.status == "PENDING")).first()
        if pending is not None:
            return int(pending.id)
        rules = context.envelope.get("approvals") or {}
        roles = rules.get("approverRoles") or self._approver_roles(connection, tenant)
        ttl = rules.get("ttlSeconds") or 3600
        approval_id = int(
            connection.execute(
                a.insert().returning(a.c.id),
                {
                    "tenant": tenant,
                    "subject_kind": "ToolCall",
                    "subject_name": request.instance,
                    "transition": key,
                    "required": rules.get("requiredApprovals") or 1,
                    "approver_roles": roles,
                    "status": "PENDING",
                    "decisions": [],
                    "reason": "; ".join(outcome.reasons),
                    "requested_sha": None,
                    "created_at": now,
                    "expires_at": now + dt.timedelta(seconds=ttl),
                },
            ).scalar_one()
        )
        chain.append(
            connection,
            [
                chain.Record(
                    tenant=tenant,
                    type="APPROVAL_REQUESTED",
                    object_kind="Approval",
                    object_name=str(approval_id),
                    after={
                        "subject": {"kind": "ToolCall", "instance": request.instance, "tool": request.tool},
                        "reasons": outcome.reasons,
                        "roles": roles,
                    },
                )
            ],
            now,
        )
        return approval_id

    def _approver_roles(self, connection: sa.Connection, tenant: str) -> list[str]:
        r = tables.roles.c
        rows = connection.execute(sa.select(r.name, r.spec).where(r.tenant == tenant, r.status == "ACTIVE"))
        return sorted(row.name for row in rows if set(row.spec.get("permissions", [])) & _APPROVER_PERMISSIONS)


_EMPTY_ENVELOPE: dict[str, Any] = {
    "maxRisk": None,
    "approvalAbove": None,
    "tools": {"allow": None, "deny": [], "requireApproval": []},
    "budgets": {"perCall": None, "perRun": None, "daily": None},
    "loop": {"threshold": None, "windowSeconds": None},
    "approvals": {"requiredApprovals": None, "approverRoles": None, "ttlSeconds": None},
    "sources": [],
}


#: Stands for a version whose effective envelope is not stored (decisions fail closed).
_MISSING: dict[str, Any] = dict(_EMPTY_ENVELOPE)


def _deny_type(reasons: list[str]) -> str:
    if any(r.startswith("BUDGET_EXCEEDED") for r in reasons):
        return "BUDGET_EXCEEDED"
    if any(r.startswith("LOOP_DETECTED") for r in reasons):
        return "LOOP_DETECTED"
    return "POLICY_EVALUATED"
