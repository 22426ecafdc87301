"""The manifest kinds, in apply order, without importing the models (CLI start-up stays light)."""

from __future__ import annotations

__all__ = ["API_VERSION", "KIND_NAMES", "NOTIFICATION_EVENTS"]

API_VERSION = "arm/v1"

#: Tenants before templates before versions before envelopes before deployments.
KIND_NAMES = (
    "Tenant",
    "Project",
    "Environment",
    "Role",
    "Operator",
    "ToolCatalog",
    "AgentTemplate",
    "EvaluationSuite",
    "AgentVersion",
    "PolicyEnvelope",
    "Deployment",
    "NotificationChannel",
)

#: What a NotificationChannel may subscribe to (``spec.events``), each told once when it happens.
#: Most are the change record of the same type; ``GATE_WAITING`` is an object starting to wait at
#: a gate, ``RECONCILE_FAILED`` a commit that could not be applied, and the ``EMERGENCY_*`` family
#: covers every emergency control an operator (or continuous evaluation) pulls.
NOTIFICATION_EVENTS = (
    "APPROVAL_REQUESTED",
    "APPROVAL_ESCALATED",
    "APPROVAL_EXPIRED",
    "GATE_WAITING",
    "DEPLOYMENT_CANARY_HALTED",
    "DEPLOYMENT_ROLLED_BACK",
    "EMERGENCY_PAUSE",
    "EMERGENCY_QUARANTINE",
    "EMERGENCY_READONLY",
    "EMERGENCY_DRAIN",
    "EMERGENCY_RELEASE",
    "RECONCILE_FAILED",
    "VERSION_INTEGRITY_FAILED",
    "BUDGET_EXCEEDED",
    "EVALUATION_FAILED",
)
