"""What a plan is made of: actions (one change record each), conditions, and the plan itself.

An :class:`Action` names the object, the operation (:data:`Op`), the change-record type it will
write and the before/after values; ``data`` carries what the applier needs and the record does not show
(the full spec of a created object, row ids). A :class:`Condition` is why an object is not
where Git wants it yet (a gate that waits, an instance held by an emergency control). Plans
are ordered: tenants before templates before versions before envelopes before deployments
before instances, prunes last.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from reconciler import errors

__all__ = ["CREATED", "RETIRED", "UPDATED", "Action", "Condition", "ConditionReason", "ConditionType", "Op", "Plan"]

#: What an action does: a manifest object created, updated (its spec), retired (pruned); a
#: version's lifecycle step (transition); a gate's approval requested; a deployment record
#: created (deploy), moved a state (record-state), scaled (record-replicas) or moved along its
#: canary rollout (record-rollout); an instance provisioned or moved a state (instance-state).
Op = Literal[
    "create",
    "update",
    "retire",
    "transition",
    "request-approval",
    "deploy",
    "record-state",
    "record-replicas",
    "record-rollout",
    "provision",
    "instance-state",
]

#: Why an object is not where Git wants it: it waits for a gate, an emergency control holds it,
#: or a canary rollout is under way, halted or rolled back.
ConditionType = Literal["Waiting", "Held", "Progressing", "Halted", "RolledBack"]
ConditionReason = Literal[
    "GateNotMet",
    "ApprovalPending",
    "ApprovalDenied",
    "EmergencyHold",
    "CanaryProgressing",
    "CanaryUnhealthy",
    "CanaryRolledBack",
]

#: Change-record types per manifest kind (the ARM enum, extended for updates and prunes).
CREATED = {
    "Tenant": "TENANT_BOOTSTRAPPED",
    "Project": "PROJECT_CREATED",
    "Environment": "ENVIRONMENT_CREATED",
    "Role": "ROLE_CREATED",
    "Operator": "OPERATOR_CREATED",
    "ToolCatalog": "TOOL_CATALOG_CREATED",
    "AgentTemplate": "TEMPLATE_CREATED",
    "EvaluationSuite": "EVALUATION_SUITE_CREATED",
    "AgentVersion": "VERSION_CREATED",
    "PolicyEnvelope": "POLICY_ATTACHED",
    "Deployment": "DEPLOYMENT_DECLARED",  # the manifest; DEPLOYMENT_CREATED is for each record
    "NotificationChannel": "NOTIFICATION_CHANNEL_CREATED",
}
UPDATED = {
    "Tenant": "TENANT_UPDATED",
    "Project": "PROJECT_UPDATED",
    "Environment": "ENVIRONMENT_UPDATED",
    "Role": "ROLE_UPDATED",
    "Operator": "OPERATOR_UPDATED",
    "ToolCatalog": "TOOL_CATALOG_UPDATED",
    "AgentTemplate": "TEMPLATE_UPDATED",
    "EvaluationSuite": "EVALUATION_SUITE_UPDATED",
    "AgentVersion": "VERSION_UPDATED",
    "PolicyEnvelope": "POLICY_UPDATED",
    "Deployment": "DEPLOYMENT_UPDATED",
    "NotificationChannel": "NOTIFICATION_CHANNEL_UPDATED",
}
RETIRED = {
    "Tenant": "TENANT_RETIRED",
    "Project": "PROJECT_RETIRED",
    "Environment": "ENVIRONMENT_RETIRED",
    "Role": "ROLE_RETIRED",
    "Operator": "OPERATOR_RETIRED",
    "ToolCatalog": "TOOL_CATALOG_RETIRED",
    "AgentTemplate": "TEMPLATE_RETIRED",
    "EvaluationSuite": "EVALUATION_SUITE_RETIRED",
    "AgentVersion": "VERSION_RETIRED",
    "PolicyEnvelope": "POLICY_DETACHED",
    "Deployment": "DEPLOYMENT_REMOVED",  # the manifest; DEPLOYMENT_RETIRED is for each record
    "NotificationChannel": "NOTIFICATION_CHANNEL_RETIRED",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action:
    op: Op
    kind: str  # a manifest kind, or DeploymentRecord, Instance, Approval
    tenant: str
    name: str
    record: str  # the change-record type this action writes
    before: Any = None
    after: Any = None
    reason: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "kind": self.kind,
            "tenant": self.tenant,
            "name": self.name,
            "record": self.record,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Condition:
    kind: str
    tenant: str
    name: str
    type: ConditionType
    reason: ConditionReason
    message: str
    approval: tuple[str, str, str, str] | None = None  # the approval it waits for, if any

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tenant": self.tenant,
            "name": self.name,
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
        }


@dataclasses.dataclass
class Plan:
    revision: str
    sha: str
    author: str
    actions: list[Action] = dataclasses.field(default_factory=list)
    conditions: list[Condition] = dataclasses.field(default_factory=list)
    problems: list[errors.Problem] = dataclasses.field(default_factory=list)
    #: (kind, tenant, name) → conditions to store on that object (only where they changed)
    condition_updates: dict[tuple[str, str, str], list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    #: valid but without effect in the commit (``desired.checking.warnings``), for the reports
    warnings: list[errors.Problem] = dataclasses.field(default_factory=list)
    #: (tenant, version) → (effective envelope, its digest), where it changed. Derived from the
    #: envelope manifests (whose own changes are recorded), so it writes no change record.
    envelope_updates: dict[tuple[str, str], tuple[dict[str, Any], str]] = dataclasses.field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions) or bool(self.condition_updates) or bool(self.envelope_updates)

    def raise_for_problems(self) -> None:
        if self.problems:
            raise errors.PlanError(self.problems, revision=self.revision)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for action in self.actions:
            counts[action.record] = counts.get(action.record, 0) + 1
        return counts
