"""Effective envelopes: version > template > project > tenant, field by field; restrictions accumulate."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.desired import models
from reconciler.policy import envelopes

CHAIN = envelopes.scope_chain("acme", "support", "agent", "agent@1.0.0")


def spec(**fields: Any) -> dict[str, Any]:
    scope = fields.pop("scope", {"kind": "Tenant", "name": "acme"})
    return models.PolicyEnvelopeSpec.model_validate({"scope": scope, **fields}).model_dump(mode="json")


def effective(**by_scope: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    names = {
        "tenant": ("Tenant", "acme"),
        "project": ("Project", "support"),
        "template": ("AgentTemplate", "agent"),
        "version": ("AgentVersion", "agent@1.0.0"),
    }
    return envelopes.effective(CHAIN, {names[k]: v for k, v in by_scope.items()})


CASES = [
    ("nothing set anywhere", {}, {"maxRisk": None, "budgets": {"perCall": None, "perRun": None, "daily": None}}),
    ("a tenant value applies everywhere", {"tenant": [("t", spec(maxRisk="YELLOW"))]}, {"maxRisk": "YELLOW"}),
    ("the project overrides the tenant", {"tenant": [("t", spec(maxRisk="YELLOW"))], "project": [("p", spec(maxRisk="RED"))]}, {"maxRisk": "RED"}),
    ("the template overrides the project", {"project": [("p", spec(maxRisk="RED"))], "template": [("a", spec(maxRisk="GREEN"))]}, {"maxRisk": "GREEN"}),
    ("the version overrides the template", {"template": [("a", spec(maxRisk="GREEN"))], "version": [("v", spec(maxRisk="YELLOW"))]}, {"maxRisk": "YELLOW"}),
    ("an unset field inherits", {"tenant": [("t", spec(maxRisk="YELLOW", budgets={"daily": 20}))], "version": [("v", spec(budgets={"perCall": 1}))]},
     {"maxRisk": "YELLOW", "budgets": {"perCall": 1.0, "perRun": None, "daily": 20.0}}),
    ("deny lists accumulate down the chain", {"tenant": [("t", spec(tools={"deny": ["shell.exec"]}))], "template": [("a", spec(tools={"deny": ["email.send"]}))]},
     {"tools": {"allow": None, "deny": ["email.send", "shell.exec"], "requireApproval": []}}),
    ("a lower scope cannot lift a deny", {"tenant": [("t", spec(tools={"deny": ["shell.exec"]}))], "version": [("v", spec(tools={"allow": ["shell.exec"]}))]},
     {"tools": {"allow": ["shell.exec"], "deny": ["shell.exec"], "requireApproval": []}}),
    ("approval lists accumulate", {"project": [("p", spec(tools={"requireApproval": ["a.x"]}))], "version": [("v", spec(tools={"requireApproval": ["b.y"]}))]},
     {"tools": {"allow": None, "deny": [], "requireApproval": ["a.x", "b.y"]}}),
    ("allow lists intersect", {"tenant": [("t", spec(tools={"allow": ["a.x", "b.y", "c.z"]}))], "template": [("a", spec(tools={"allow": ["b.y", "c.z", "d.w"]}))]},
     {"tools": {"allow": ["b.y", "c.z"], "deny": [], "requireApproval": []}}),
    ("several envelopes at one scope apply in name order", {"tenant": [("b-second", spec(maxRisk="RED")), ("a-first", spec(maxRisk="GREEN"))]},
     {"maxRisk": "RED", "sources": ["a-first", "b-second"]}),
    ("approval rules inherit field by field", {"tenant": [("t", spec(approvals={"requiredApprovals": 2, "approverRoles": ["cab"]}))], "version": [("v", spec(approvals={"requiredApprovals": 1}))]},
     {"approvals": {"requiredApprovals": 1, "approverRoles": ["cab"], "ttlSeconds": None, "escalateAfterSeconds": None, "escalateTo": None}}),
    ("escalation inherits field by field", {"tenant": [("t", spec(approvals={"escalateAfterSeconds": 600, "escalateTo": ["cab"]}))], "template": [("m", spec(approvals={"escalateTo": ["oncall"]}))]},
     {"approvals": {"requiredApprovals": None, "approverRoles": None, "ttlSeconds": None, "escalateAfterSeconds": 600, "escalateTo": ["oncall"]}}),
    ("sources list every contributing envelope, broadest first", {"version": [("v", spec())], "tenant": [("t", spec())], "project": [("p", spec())]},
     {"sources": ["t", "p", "v"]}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_effective_envelope(case: str, given: dict[str, Any], expected: dict[str, Any]) -> None:
    result = effective(**given)
    for key, value in expected.items():
        assert result[key] == value, key
