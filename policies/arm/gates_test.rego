package arm.gates_test

import rego.v1

import data.arm.gates

version_step(evaluations) := {
	"id": "v1", "kind": "AgentVersion", "from": "TESTING", "to": "CANDIDATE",
	"version": {"name": "a@1.0.0", "lifecycle": "TESTING", "evaluations": evaluations, "integrity": "OK"},
}

test_candidate_needs_evidence if {
	r := gates.results.v1 with input as {"steps": [version_step([])]}
	r.allowed == false
	r.waiting == ["waiting for passing evaluation evidence (spec.evaluations is empty)"]
}

test_candidate_with_passing_evidence_is_allowed if {
	r := gates.results.v1 with input as {"steps": [version_step([{"suite": "qa", "score": 0.9, "threshold": 0.8, "passed": true}])]}
	r.allowed == true
	r.waiting == []
}

test_failing_suite_is_named if {
	r := gates.results.v1 with input as {"steps": [version_step([
		{"suite": "qa", "score": 0.9, "threshold": 0.8, "passed": true},
		{"suite": "safety", "score": 0.5, "threshold": 0.95, "passed": false, "shown": {"score": "50%", "threshold": "95%"}},
	])]}
	r.waiting == ["waiting for passing evaluation evidence: suite safety scored 50%, below 95%"]
}

# Scores are printed as the reconciler wrote them; without that, the suite is named alone.
test_a_score_is_never_printed_by_the_engine if {
	r := gates.results.v1 with input as {"steps": [version_step([{"suite": "safety", "score": 0.285, "threshold": 0.3, "passed": true}])]}
	r.waiting == ["waiting for passing evaluation evidence: suite safety did not pass"]
}

# A malformed step is held back, never let through, and never fails the evaluation.
test_a_malformed_step_waits if {
	every step in [
		object.union(version_step("not a list"), {}),
		object.union(version_step([{"suite": 7, "score": "high", "threshold": 0.5, "passed": true}]), {}),
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
	"version": {"name": "a@1.0.0", "lifecycle": "CANDIDATE", "evaluations": [], "integrity": "OK"},
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
	"version": {"name": "a@2.0.0", "lifecycle": lifecycle, "evaluations": [], "integrity": integrity},
	"environment": {"name": "prod", "admission": {"minLifecycle": "APPROVED"}},
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
