"""Shared state of one planning pass and the helpers both planners use.

:class:`Context` holds the desired snapshot, the actual state, the policy engine and the plan
being built; ``planning`` (objects, versions, prunes) and ``deploying`` (deployments and
instances) add actions and conditions to it. Pure, like the planners.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from reconciler.desired import models
from reconciler.desired import snapshot as snapshot_
from reconciler.policy import engines, envelopes
from reconciler.reconcile import actions as actions_
from reconciler.state import actual as actual_

__all__ = ["Context", "keep_waiting", "plan_objects", "row_data", "spec_of", "version_envelope", "wait_for_gate"]

Action = actions_.Action
Condition = actions_.Condition


@dataclasses.dataclass
class Context:
    """What every planning step shares: both states, the engine, and the plan being built."""

    desired: snapshot_.Snapshot
    actual: actual_.Actual
    engine: engines.Engine
    result: actions_.Plan
    #: (tenant, version) → the lifecycle the version will have once this plan is applied
    version_states: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    _roles_of: dict[tuple[str, str], list[str]] | None = None
    _approvers: dict[str, list[str]] | None = None
    _envelope_index: dict[tuple[str, str, str], list[snapshot_.Object]] | None = None
    envelope_memo: dict[tuple[tuple[str, str], ...], dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: every gate input but the objects' own documents is as at the last apply (see planning)
    gates_settled: bool = False
    #: whether canary rollouts in progress may take their next step (or halt, or roll back)
    advance: bool = True
    #: instance id → health of the instances of canaries in progress, read fresh (see rolling)
    health: dict[str, str] = dataclasses.field(default_factory=dict)
    #: indexes a planning step builds once per plan (``evidencing``: suites by template)
    memo: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, action: Action) -> None:
        self.result.actions.append(action)

    def wait(self, condition: Condition) -> None:
        self.result.conditions.append(condition)

    def operator_roles(self, tenant: str, operator: str) -> list[str]:
        if self._roles_of is None:
            self._roles_of = {
                (o.tenant, o.name): [name for _, kind, name in o.doc.refs if kind == "Role"]
                for o in self.desired.of_kind("Operator")
            }
        return self._roles_of.get((tenant, operator), [])

    def default_approver_roles(self, tenant: str) -> list[str]:
        """Roles holding an approval permission: who may approve when nothing says otherwise."""
        if self._approvers is None:
            approvers: dict[str, list[str]] = defaultdict(list)
            for role in self.desired.of_kind("Role"):
                permissions = set(role.doc.facts["permissions"])
                if models.grants(permissions, "approvals:decide") or models.grants(permissions, "versions:approve"):
                    approvers[role.tenant].append(role.name)
            self._approvers = {t: sorted(r) for t, r in approvers.items()}
        return self._approvers.get(tenant, [])

    def approvals_input(self, key: tuple[str, str, str, str]) -> tuple[list[dict[str, Any]], actual_.ApprovalRow | None]:
        """Decisions recorded for an approval subject, with each operator's roles, and its row."""
        rows = self.actual.approvals.get(key, [])
        row = rows[-1] if rows else None
        decisions = []
        for r in rows:
            for d in r.decisions:
                decisions.append(
                    {"operator": d["operator"], "roles": self.operator_roles(key[0], d["operator"]), "decision": d["decision"]}
                )
        return decisions, row


def plan_objects(ctx: Context, kind: str) -> None:
    desired, actual = ctx.desired, ctx.actual
    # The documents of what will be created or updated, read in one batch when they are not in
    # memory (a snapshot from the parse cache): not one `git cat-file` per file.
    desired.prefetch(
        [
            obj
            for obj in desired.of_kind(kind)
            if (row := actual.objects.get(obj.key)) is None or row.digest != obj.doc.digest or row.status != "ACTIVE"
        ]
    )
    for obj in desired.of_kind(kind):
        row = actual.objects.get(obj.key)
        if row is None:
            ctx.add(
                Action(
                    op="create",
                    kind=kind,
                    tenant=obj.tenant,
                    name=obj.name,
                    record=actions_.CREATED[kind],
                    before=None,
                    after=spec_of(desired, obj),
                    data=row_data(obj),
                )
            )
        elif row.digest != obj.doc.digest or row.status != "ACTIVE":
            before: dict[str, Any] = {"digest": row.digest}
            if row.status != "ACTIVE":
                before["status"] = row.status
            ctx.add(
                Action(
                    op="update",
                    kind=kind,
                    tenant=obj.tenant,
                    name=obj.name,
                    record=actions_.UPDATED[kind],
                    before=before,
                    after=spec_of(desired, obj),
                    data=row_data(obj, row.id),
                )
            )


def spec_of(desired: snapshot_.Snapshot, obj: snapshot_.Object) -> dict[str, Any]:
    """What a change record shows of a created or updated object.

    The manifest as written, except for versions: their genome is stored once, in the version's
    row, and the record carries its hash (which ``audit verify`` checks the row against).
    """
    doc = obj.doc
    if obj.kind == "AgentVersion":
        return {"template": doc.template, "parent": doc.parent, "desiredLifecycle": doc.lifecycle, "digest": doc.digest}
    data = desired.data(obj)
    return {"spec": data.get("spec", {}), "labels": data["metadata"].get("labels", {}), "digest": doc.digest}


def row_data(obj: snapshot_.Object, row_id: int | None = None) -> dict[str, Any]:
    return {"id": row_id, "digest": obj.doc.digest, "origin": str(obj.origin), "object": obj}


def version_envelope(ctx: Context, obj: snapshot_.Object) -> dict[str, Any]:
    """The effective envelope of a version in the desired state."""
    desired = ctx.desired
    template = desired.get("AgentTemplate", obj.tenant, obj.doc.template or "")
    project = next((name for _, kind, name in template.doc.refs if kind == "Project"), None) if template else None
    has_own = bool(_envelopes_at(ctx, obj.tenant, ("AgentVersion", obj.name)))
    # Most versions have no envelope of their own: they share their template's result.
    chain = envelopes.scope_chain(obj.tenant, project, obj.doc.template, obj.name if has_own else None)
    memo_key = tuple(chain)
    if memo_key in ctx.envelope_memo:
        return ctx.envelope_memo[memo_key]
    by_scope: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for scope in chain:
        for env in _envelopes_at(ctx, obj.tenant, scope):
            by_scope[scope].append((env.name, env.doc.facts))
    result = ctx.envelope_memo[memo_key] = envelopes.effective(chain, by_scope)
    return result


def _envelopes_at(ctx: Context, tenant: str, scope: tuple[str, str]) -> list[snapshot_.Object]:
    if ctx._envelope_index is None:
        index: dict[tuple[str, str, str], list[snapshot_.Object]] = defaultdict(list)
        for env in ctx.desired.of_kind("PolicyEnvelope"):
            _, kind, name = env.doc.refs[0]  # an envelope's first reference is its scope
            index[(env.tenant, kind, name)].append(env)
        ctx._envelope_index = index
    return list(ctx._envelope_index.get((tenant, *scope), []))


def wait_for_gate(
    ctx: Context,
    kind: str,
    tenant: str,
    name: str,
    transition: tuple[str, str],
    gate: dict[str, Any],
    approval: tuple[tuple[str, str, str, str], dict[str, Any]] | None = None,
) -> None:
    """Record why an object waits, and request an approval once when its gate needs one.

    ``approval`` is the approval subject key and the requirement (``required``, ``roles``) of
    the step, for steps that can need approvals. The condition names the approval by id
    ("(approval 42)"); for a request made by this plan the applier adds the id it gets.
    """
    state, target = transition
    message = "; ".join(gate["waiting"])
    reason: actions_.ConditionReason = "GateNotMet"
    key = None
    if gate.get("needsApproval") and approval is not None:
        key, requirement = approval
        _, row = ctx.approvals_input(key)
        if row is not None and row.status == "DENIED":
            denied = next((d for d in row.decisions if d["decision"] == "DENY"), {})
            reason = "ApprovalDenied"
            why = denied.get("justification") or "no reason given"
            message = f"approval {row.id} was denied by {denied.get('operator', 'an operator')}: {why}"
        else:
            reason = "ApprovalPending"
            if row is None:
                ctx.add(
                    Action(
                        op="request-approval",
                        kind="Approval",
                        tenant=tenant,
                        name=f"{kind}/{name}",
                        record="APPROVAL_REQUESTED",
                        before=None,
                        after={"subject": {"kind": kind, "name": name}, "transition": key[3], **requirement},
                        reason=message,
                        data={"key": key, "required": requirement["required"], "roles": requirement["roles"]},
                    )
                )
            else:
                message = f"{message} (approval {row.id})"
    ctx.wait(
        Condition(
            kind=kind,
            tenant=tenant,
            name=name,
            type="Waiting",
            reason=reason,
            message=f"{state} -> {target}: {message}",
            approval=key,
        )
    )


def keep_waiting(ctx: Context, kind: str, obj: snapshot_.Object) -> bool:
    """Carry a waiting object's stored conditions over when its gate cannot have changed."""
    if not ctx.gates_settled:
        return False
    row = ctx.actual.objects.get(obj.key)
    stored = ctx.actual.conditions.get(obj.key)
    if row is None or row.digest != obj.doc.digest or not stored or any(c["type"] != "Waiting" for c in stored):
        return False
    for c in stored:
        ctx.wait(Condition(kind=kind, tenant=obj.tenant, name=obj.name, type=c["type"], reason=c["reason"], message=c["message"]))
    return True
