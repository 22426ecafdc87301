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
#   "needsApproval": bool}, for each step whose id is a string. A step that is not allowed waits
# at its current state with its reasons as the object's condition; nothing fails. Fleet policy
# adds reasons with `gate_waiting contains {"id": step.id, "reason": "..."}` in any package under
# data.arm.ext.
#
# Written to mean the same on every engine, for any input: types are checked before a value is
# iterated, counted, computed with or printed, and a part of a step that is missing or of the
# wrong type holds the step back (evidence missing, approvals not counted) rather than letting it
# through. No number is formatted here: evidence comes judged, its summary written by the
# reconciler (engines multiply and round fractions differently: 0.285 is 28% on one, 29% on another).
package arm.gates

import rego.v1

lifecycle_rank := {"DRAFT": 0, "TESTING": 1, "CANDIDATE": 2, "APPROVED": 3, "DEPRECATED": 4, "RETIRED": 5}

# METADATA
# title: Lifecycle gates
# description: >-
#   Per step id, whether the planner may take the step now and, if not, what it waits for.
# entrypoint: true
results[step.id] := result if {
	some step in steps
	is_string(step.id)
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

# The steps asked about: objects only.
steps contains step if {
	is_array(input.steps)
	some step in input.steps
	is_object(step)
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
	count(required_evidence(step)) == 0
	msg := sprintf("waiting for evaluation: no EvaluationSuite is required for TESTING -> CANDIDATE of template %s", [text(object.get(step, ["version", "template"], null))])
} else := [sprintf("waiting for evaluation: %s", [text(object.get(e, "summary", object.get(e, "suite", null)))]) |
	some e in evidence_of(step)
	holds_back(e)
]

# A step's judged evidence: objects only; none when the step has none or what it has is no list.
evidence_of(step) := [e |
	evidence := object.get(step, "evidence", [])
	is_array(evidence)
	some e in evidence
	is_object(e)
]

required_evidence(step) := [e |
	some e in evidence_of(step)
	e.required == true
]

# A required suite holds the step back unless it is passing; a failing one always does. A status
# that is missing or not one of the three holds a required suite back too.
holds_back(e) if {
	e.required == true
	not object.get(e, "status", null) == "passing"
}

holds_back(e) if e.status == "failing"

# A value a reason names: a string as it is, anything else by its type.
text(value) := value if {
	is_string(value)
} else := type_name(value)

# Steps with a requirement need that many approvals from operators holding one of its roles. A
# requirement that is no whole number of roles' approvals holds the step back, naming it.
approval_waiting(step) := [] if {
	not step.requirement
} else := ["waiting for an approval requirement that can be met (the step's requirement is malformed)"] if {
	not well_formed_requirement(step.requirement)
} else := [] if {
	approvers_count(step) >= step.requirement.required
} else := [msg] if {
	missing := step.requirement.required - approvers_count(step)
	msg := sprintf("waiting for %s approval%s from %s", [format_int(missing, 10), plural(missing), concat(" or ", sort(step.requirement.roles))])
}

well_formed_requirement(requirement) if {
	required := requirement.required
	is_number(required)
	required >= 0
	required <= 1000
	round(required) == required
	roles := requirement.roles
	is_array(roles)
	every role in roles {
		is_string(role)
	}
}

approvers_count(step) := count({a.operator |
	approvals := object.get(step, "approvals", [])
	is_array(approvals)
	some a in approvals
	a.decision == "APPROVE"
	is_array(a.roles)
	some role in a.roles
	role in step.requirement.roles
})

plural(1) := ""

plural(n) := "s" if n != 1

# A deployment needs a version its environment admits, and a version whose genome is intact.
admission_waiting(step) := [msg] if {
	step.kind == "Deployment"
	not admitted_step(step)
	msg := sprintf("waiting for version %s to reach %s (it is %s)", [
		text(object.get(step, ["version", "name"], null)),
		text(object.get(step, ["environment", "admission", "minLifecycle"], null)),
		text(object.get(step, ["version", "lifecycle"], null)),
	])
} else := [msg] if {
	step.kind == "Deployment"
	not object.get(step, ["version", "integrity"], null) == "OK"
	msg := sprintf("version %s failed its integrity check and may not be deployed", [text(object.get(step, ["version", "name"], null))])
} else := []

# A rule of its own, so that its negation is true when a field is missing on every engine.
admitted_step(step) if admitted(step.version.lifecycle, step.environment.admission.minLifecycle)

admitted(lifecycle, minimum) if {
	lifecycle_rank[lifecycle] >= lifecycle_rank[minimum]
	lifecycle_rank[lifecycle] <= lifecycle_rank.APPROVED
}

extension_waiting(step) := sort([r.reason |
	some extension in data.arm.ext
	some r in extension.gate_waiting
	r.id == step.id
])
