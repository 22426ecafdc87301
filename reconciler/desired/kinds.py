"""The manifest kinds, in apply order, without importing the models (CLI start-up stays light)."""

from __future__ import annotations

__all__ = ["API_VERSION", "KIND_NAMES"]

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
)
