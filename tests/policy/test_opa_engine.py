"""Pushing a revision to OPA, one request per module: every state the push passes through loads.

Against the OPA-protocol test double (tests/policy/opa_double.py), which refuses a policy write
or delete that leaves a module calling a function no module defines, as OPA's compiler does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler import errors
from reconciler.policy import engines, library, opa
from tests.policy.decision_cases import make_input
from tests.policy.opa_double import OpaDouble

FLEET = {"envelopes": {"acme": {"t@1": {"maxRisk": "RED"}}}, "tools": {"acme": {"crm.lookup": {"risk": "GREEN"}}}}

#: A fleet rule that needs a helper package pushed with it (and named before it, so a push in
#: the bundle's order would send the rule first).
USES_HELPER = """package arm.ext.a

import rego.v1

deny contains msg if {
	data.arm.z_helpers.blocked(input.tool.name)
	msg := sprintf("%s is blocked by the fleet", [input.tool.name])
}
"""
HELPER = """package arm.z_helpers

import rego.v1

blocked(name) if name in data.arm.fleet.blocked
"""
PLAIN = 'package arm.ext.a\n\nimport rego.v1\n\ndeny contains msg if {\n\tfalse\n\tmsg := "never"\n}\n'


@pytest.fixture
def double() -> Iterator[OpaDouble]:
    with OpaDouble() as server:
        yield server


def revision(name: str, fleet_modules: dict[str, str], data: dict[str, object] | None = None) -> engines.Bundle:
    return engines.Bundle(library.modules_for(fleet_modules, tests=False), {"arm": {"fleet": data or FLEET}}, name)


def test_the_data_is_written_where_the_bundle_has_it_before_any_module(double: OpaDouble) -> None:
    engine = opa.OpaEngine(double.url)
    engine.load(revision("r1", {}))
    assert double.state.data == {"arm": {"fleet": FLEET}}
    assert double.state.writes[0] == ("PUT", "/v1/data/arm/fleet")
    assert all(path.startswith("/v1/policies/arm-reconciler/") for _, path in double.state.writes[1:])
    assert engine.query(["arm", "fleet"], None) == {"result": FLEET}


def test_a_module_that_needs_one_not_pushed_yet_is_pushed_after_it(double: OpaDouble) -> None:
    engine = opa.OpaEngine(double.url)
    engine.load(revision("r1", {"fleet/a.rego": PLAIN}))
    double.state.writes.clear()
    engine.load(
        revision("r2", {"fleet/a.rego": USES_HELPER, "fleet/z_helpers.rego": HELPER}, {**FLEET, "blocked": ["crm.lookup"]})
    )
    pushed = [path for method, path in double.state.writes if method == "PUT"]
    assert pushed.index("/v1/policies/arm-reconciler/fleet/z_helpers.rego") < pushed.index(
        "/v1/policies/arm-reconciler/fleet/a.rego"
    )
    assert engine.revision == "r2"
    assert engine.evaluate("data.arm.decision.result", make_input()) == {
        "decision": "DENY",
        "reasons": ["crm.lookup is blocked by the fleet"],
    }


def test_stale_modules_are_deleted_last_unless_one_stands_in_the_way(double: OpaDouble) -> None:
    engine = opa.OpaEngine(double.url)
    engine.load(
        revision("r1", {"fleet/a.rego": USES_HELPER, "fleet/z_helpers.rego": HELPER, "fleet/old.rego": "package arm.old\n"})
    )
    double.state.writes.clear()
    # r2 drops the rule and the helper's function: OPA refuses the new helper while the old rule
    # still calls the function, so the stale modules go first this time; the push still succeeds.
    engine.load(revision("r2", {"fleet/z_helpers.rego": "package arm.z_helpers\n\nimport rego.v1\n\nnothing := true\n"}))
    methods = [method for method, _ in double.state.writes]
    assert methods[0] == "PUT" and "DELETE" in methods
    assert not any(policy_id.endswith(("a.rego", "old.rego")) for policy_id in double.state.policies)
    assert engine.evaluate("data.arm.decision.result", make_input()) == {"decision": "ALLOW", "reasons": ["within the envelope"]}

    double.state.writes.clear()
    engine.load(revision("r3", {"fleet/z_helpers.rego": HELPER}))  # nothing in the way: deletes come last
    engine.load(revision("r4", {}))
    assert double.state.writes[-1] == ("DELETE", "/v1/policies/arm-reconciler/fleet/z_helpers.rego")


def test_a_revision_opa_refuses_leaves_the_last_good_one_in_place(double: OpaDouble) -> None:
    engine = opa.OpaEngine(double.url)
    engine.load(revision("r1", {"fleet/a.rego": PLAIN}))
    with pytest.raises(errors.PolicyError, match="r2"):
        engine.load(revision("r2", {"fleet/a.rego": USES_HELPER}))  # the helper is missing
    assert engine.revision == "r1"
    assert double.state.policies["arm-reconciler/fleet/a.rego"] == PLAIN
    assert engine.evaluate("data.arm.decision.result", make_input())["decision"] == "ALLOW"


def test_a_query_reaches_any_path_and_a_rule_under_data_itself(double: OpaDouble) -> None:
    engine = opa.OpaEngine(double.url)
    engine.load(revision("r1", {"fleet/top.rego": "package top\n\nimport rego.v1\n\nanswer := input.x\n", "fleet/a.rego": PLAIN}))
    assert engine.evaluate("data.top.answer", {"x": 7}) == 7  # a rule one level under data
    assert engine.query(["top"], {"x": 1}) == {"result": {"answer": 1}}
    assert engine.query(["top", "answer"], None) == {}  # no input: undefined, as OPA has it
    assert engine.query(["arm", "ext", "a", "deny"], {}) == {"result": []}
    assert engine.query([], {})["result"]["arm"]["fleet"] == FLEET
