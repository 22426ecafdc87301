# Promotion and admission gates: what a lifecycle step waits for before the reconciler takes it.
#
# Input: {"steps": [step, ...]}, one step per transition the planner wants to take:
#   {"id": "...", "kind": "AgentVersion" | "Deployment", "from": "...", "to": "...",
#    "version": {"name", "template", "lifecycle", "integrity"},
#    "evidence": [{"suite", "category", "required": bool, "status": "missing" | "passing" | "failing",
#                  "summary"}],   # recorded evaluation runs, judged against their EvaluationSuite;
#                                 # summary: why, with the numbers (not given for passing ones)
#    "environment": {"name", "admission": {"minLifecycle", "requireApproval", ...}},   # deployments
#    "requirement": {"required": n, "roles": [...]},      # approvals this step needs, if any
#    "approvals": [{"operator", "roles": [...], "decision": "APPROVE" | "DENY"}]}
#
# Output: data.arm.gates.results[step.id] = {"allowed": bool, "waiting": [reason, ...],
#   "needsApproval": bool}. A step that is not allowed waits at its current state with its
# reasons as the object's condition; nothing fails. Fleet policy adds reasons with
# `gate_waiting contains {"id": step.id, "reason": "..."}` in any package under data.arm.ext.
package arm.gates

import rego.v1

lifecycle_rank := {"DRAFT": 0, "TESTING": 1, "CANDIDATE": 2, "APPROVED": 3, "DEPRECATED": 4, "RETIRED": 5}

results[step.id] := result if {
	some step in input.steps
	evidence := evidence_waiting(step)
	approval := approval_waiting(step)
	others := array.concat(evidence, array.concat(admission_waiting(step), extension_waiting(step)))
	reasons := array.concat(array.concat(evidence, approval), array.slice(others, count(evidence), count(others)))
	result := {
		"allowed": count(reasons) == 0,
		"waiting": reasons,
		"needsApproval": needs_approval(approval, others),
	}
}

# Approval is asked for only once nothing else holds the step back.
needs_approval(approval, others) := true if {
	count(approval) > 0
	count(others) == 0
} else := false

# Evidence is recorded evaluation runs, never what a manifest says. TESTING -> CANDIDATE needs at
# least one suite requiring it, and every required suite passing; a deployment needs the suites
# its environment requires passing, and no failing safety or regression suite (continuous
# evaluation). Summaries come judged, numbers formatted: no float is formatted here.
evidence_waiting(step) := [msg] if {
	step.kind == "AgentVersion"
	step.to == "CANDIDATE"
	count([e | some e in evidence_of(step); e.required == true]) == 0
	msg := sprintf("waiting for evaluation: no EvaluationSuite is required for TESTING -> CANDIDATE of template %s", [object.get(step.version, "template", "?")])
} else := [sprintf("waiting for evaluation: %s", [object.get(e, "summary", e.suite)]) |
	some e in evidence_of(step)
	holds_back(e)
]

evidence_of(step) := evidence if {
	evidence := object.get(step, "evidence", [])
	is_array(evidence)
} else := []

holds_back(e) if {
	e.required == true
	e.status != "passing"
}

holds_back(e) if e.status == "failing"

# Steps with a requirement need that many approvals from operators holding one of its roles.
approval_waiting(step) := [] if {
	not step.requirement
} else := [] if {
	approvers_count(step) >= step.requirement.required
} else := [msg] if {
	missing := step.requirement.required - approvers_count(step)
	msg := sprintf("waiting for %d approval%s from %s", [missing, plural(missing), concat(" or ", sort(step.requirement.roles))])
}

approvers_count(step) := count({a.operator |
	some a in object.get(step, "approvals", [])
	a.decision == "APPROVE"
	some role in a.roles
	role in step.requirement.roles
})

plural(1) := ""

plural(n) := "s" if n != 1

# A deployment needs a version its environment admits, and a version whose genome is intact.
admission_waiting(step) := [msg] if {
	step.kind == "Deployment"
	not admitted(step.version.lifecycle, step.environment.admission.minLifecycle)
	msg := sprintf("waiting for version %s to reach %s (it is %s)", [step.version.name, step.environment.admission.minLifecycle, step.version.lifecycle])
} else := [msg] if {
	step.kind == "Deployment"
	step.version.integrity != "OK"
	msg := sprintf("version %s failed its integrity check and may not be deployed", [step.version.name])
} else := []

admitted(lifecycle, minimum) if {
	lifecycle_rank[lifecycle] >= lifecycle_rank[minimum]
	lifecycle_rank[lifecycle] <= lifecycle_rank.APPROVED
}

extension_waiting(step) := sort([r.reason |
	r := data.arm.ext[_].gate_waiting[_]
	r.id == step.id
])
