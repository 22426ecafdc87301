package arm.gates_test

import rego.v1

import data.arm.gates

version_step(evidence) := {
	"id": "v1", "kind": "AgentVersion", "from": "TESTING", "to": "CANDIDATE",
	"version": {"name": "a@1.0.0", "template": "a", "lifecycle": "TESTING", "integrity": "OK"},
	"evidence": evidence,
}

suite(name, category, required, status) := {
	"suite": name, "category": category, "required": required, "status": status,
	"summary": sprintf("%s suite %s is %s", [category, name, status]),
}

test_candidate_without_a_required_suite_waits if {
	r := gates.results.v1 with input as {"steps": [version_step([])]}
	r.allowed == false
	r.waiting == ["waiting for evaluation: no EvaluationSuite is required for TESTING -> CANDIDATE of template a"]
}

test_candidate_with_every_required_suite_passing_is_allowed if {
	r := gates.results.v1 with input as {"steps": [version_step([
		suite("jailbreak", "safety", true, "passing"),
		suite("qa", "capability", true, "passing"),
	])]}
	r.allowed == true
	r.waiting == []
}

test_missing_and_failing_suites_are_named_with_their_summary if {
	r := gates.results.v1 with input as {"steps": [version_step([
		suite("jailbreak", "safety", true, "failing"),
		suite("qa", "capability", true, "passing"),
		suite("drift", "regression", true, "missing"),
	])]}
	r.allowed == false
	r.waiting == [
		"waiting for evaluation: safety suite jailbreak is failing",
		"waiting for evaluation: regression suite drift is missing",
	]
}

test_evidence_that_is_not_a_list_counts_as_none if {
	step := object.union(version_step([]), {"evidence": "passing"})
	r := gates.results.v1 with input as {"steps": [step]}
	r.allowed == false
}

# The engine prints no number: a summary is the reconciler's text; without one, the suite is named.
test_a_required_suite_without_a_summary_is_named_by_its_suite if {
	r := gates.results.v1 with input as {"steps": [version_step([{"suite": "safety", "category": "safety", "required": true, "status": "failing"}])]}
	r.waiting == ["waiting for evaluation: safety"]
}

# Evidence entries that are no objects, or have no status, never let a required suite through.
test_malformed_evidence_holds_the_step_back if {
	r := gates.results.v1 with input as {"steps": [version_step([
		"passing",
		{"suite": "qa", "required": true},
		{"suite": "qa2", "required": true, "status": 1},
	])]}
	r.allowed == false
	r.waiting == ["waiting for evaluation: qa", "waiting for evaluation: qa2"]
}

# A malformed step is held back, never let through, and never fails the evaluation.
test_a_malformed_step_waits if {
	every step in [
		object.union(version_step("not a list"), {}),
		object.union(version_step([{"suite": 7, "required": "yes", "status": "passing", "category": 3}]), {"version": "a@1.0.0"}),
		object.union(version_step(["qa"]), {}),
		{"id": "v1", "kind": "Deployment", "version": "a@1.0.0"},
		object.union(deployment_step("APPROVED", "OK"), {"requirement": {"required": 1.5, "roles": ["release-manager"]}}),
		object.union(deployment_step("APPROVED", "OK"), {"requirement": {"required": 1, "roles": "release-manager"}}),
		object.union(deployment_step("APPROVED", "OK"), {"requirement": {"required": 1, "roles": ["release-manager"]}, "approvals": "alice"}),
	] {
		r := gates.results[step.id] with input as {"steps": [step]}
		r.allowed == false
	}
}

test_steps_that_are_no_objects_or_have_no_string_id_get_no_result if {
	gates.results == {} with input as {"steps": ["v1", 7, {"id": 7, "kind": "AgentVersion"}]}
	gates.results == {} with input as {"steps": "v1"}
	gates.results == {} with input as {}
}

approval_step(approvals) := {
	"id": "v2", "kind": "AgentVersion", "from": "CANDIDATE", "to": "APPROVED",
	"version": {"name": "a@1.0.0", "template": "a", "lifecycle": "CANDIDATE", "integrity": "OK"},
	"requirement": {"required": 2, "roles": ["release-manager", "security-officer"]},
	"approvals": approvals,
}

test_approval_counts_distinct_operators_with_a_permitted_role if {
	r := gates.results.v2 with input as {"steps": [approval_step([
		{"operator": "alice", "roles": ["release-manager"], "decision": "APPROVE"},
		{"operator": "alice", "roles": ["release-manager"], "decision": "APPROVE"},
		{"operator": "bob", "roles": ["viewer"], "decision": "APPROVE"},
	])]}
	r.allowed == false
	r.needsApproval == true
	r.waiting == ["waiting for 1 approval from release-manager or security-officer"]
}

test_enough_approvals_allow_the_step if {
	r := gates.results.v2 with input as {"steps": [approval_step([
		{"operator": "alice", "roles": ["release-manager"], "decision": "APPROVE"},
		{"operator": "carol", "roles": ["security-officer"], "decision": "APPROVE"},
	])]}
	r.allowed == true
	r.needsApproval == false
}

deployment_step(lifecycle, integrity) := {
	"id": "d1", "kind": "Deployment", "from": "PENDING", "to": "ACTIVE",
	"version": {"name": "a@2.0.0", "template": "a", "lifecycle": lifecycle, "integrity": integrity},
	"environment": {"name": "prod", "admission": {"minLifecycle": "APPROVED"}},
	"evidence": [],
}

test_a_deployment_waits_for_the_suites_its_environment_requires if {
	step := object.union(deployment_step("APPROVED", "OK"), {"evidence": [suite("load", "capability", true, "missing")]})
	r := gates.results.d1 with input as {"steps": [step]}
	r.waiting == ["waiting for evaluation: capability suite load is missing"]
}

test_a_failing_safety_run_holds_new_deployments_where_not_required if {
	step := object.union(deployment_step("APPROVED", "OK"), {"evidence": [suite("jailbreak", "safety", false, "failing")]})
	r := gates.results.d1 with input as {"steps": [step]}
	r.allowed == false
	r.waiting == ["waiting for evaluation: safety suite jailbreak is failing"]
}

test_a_deployment_needs_no_suite_when_none_is_required if {
	r := gates.results.d1 with input as {"steps": [deployment_step("APPROVED", "OK")]}
	r.allowed == true
}

test_deployment_waits_for_an_admitted_version if {
	r := gates.results.d1 with input as {"steps": [deployment_step("CANDIDATE", "OK")]}
	r.waiting == ["waiting for version a@2.0.0 to reach APPROVED (it is CANDIDATE)"]
}

test_deprecated_versions_are_not_admitted if {
	r := gates.results.d1 with input as {"steps": [deployment_step("DEPRECATED", "OK")]}
	r.allowed == false
}

test_tampered_versions_are_not_deployed if {
	r := gates.results.d1 with input as {"steps": [deployment_step("APPROVED", "FAILED")]}
	r.waiting == ["version a@2.0.0 failed its integrity check and may not be deployed"]
}

test_admitted_version_is_allowed if {
	r := gates.results.d1 with input as {"steps": [deployment_step("APPROVED", "OK")]}
	r.allowed == true
}

test_approval_is_not_requested_before_the_version_is_admitted if {
	step := object.union(deployment_step("CANDIDATE", "OK"), {"requirement": {"required": 1, "roles": ["release-manager"]}, "approvals": []})
	r := gates.results.d1 with input as {"steps": [step]}
	r.needsApproval == false
	count(r.waiting) == 2
}

test_approval_is_requested_once_the_version_is_admitted if {
	step := object.union(deployment_step("APPROVED", "OK"), {"requirement": {"required": 1, "roles": ["release-manager"]}, "approvals": []})
	r := gates.results.d1 with input as {"steps": [step]}
	r.needsApproval == true
	r.waiting == ["waiting for 1 approval from release-manager"]
}
