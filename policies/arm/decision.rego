# The decision entry point: may this instance make this tool call now?
#
# Input (built by reconciler/policy/deciding.py):
#   {"instance": {"id", "state", "tenant", "template", "version"} | null,
#    "environment": {"name", "production"},
#    "tool": {"name", "known", "risk" (catalog level), "writes", "external", "productionImpact"},
#    "risk": {"level", "catalogLevel", "reasons": [...]},      # after the arguments raised it
#    "args": {...},
#    "envelope": effective envelope (see reconciler/policy/envelopes.py),
#    "cost": {"estimate", "run", "day"},                      # spent so far in the run and today
#    "loop": {"count"},                                        # same call within the loop window
#    "approval": {"granted": bool}}                            # an approved request for exactly this call
#
# Output: data.arm.decision.result = {"decision": "ALLOW" | "NEEDS_APPROVAL" | "DENY", "reasons": [...]}
# Fleet modules add reasons with `deny contains msg` / `approval contains msg` in any package
# directly under data.arm.ext; they can make a decision stricter, never lift a deny. They are
# gathered into deny_reasons and approval_reasons by extensions.rego.
#
# Written for the engine's cost: one partial set per outcome (a rule that unions two sets is
# another evaluation), sets inline (a rule's value is rebuilt on every evaluation).
package arm.decision

import rego.v1

risk_rank := {"GREEN": 0, "YELLOW": 1, "RED": 2}

result := {"decision": "DENY", "reasons": sort(deny_reasons)} if {
	deny_reasons != set()
} else := {"decision": "NEEDS_APPROVAL", "reasons": sort(approval_reasons)} if {
	approval_reasons != set()
	not input.approval.granted
} else := {"decision": "ALLOW", "reasons": ["approved request"]} if {
	input.approval.granted
} else := {"decision": "ALLOW", "reasons": ["within the envelope"]}

# ------------------------------------------------------------------ instance

deny_reasons contains "unknown instance" if input.instance == null

deny_reasons contains msg if {
	input.instance.state in {"PAUSED", "QUARANTINED", "RETIRED"}
	msg := sprintf("instance %s is %s", [input.instance.id, input.instance.state])
}

deny_reasons contains msg if {
	input.instance.state == "READONLY"
	input.tool.writes
	msg := sprintf("instance %s is read-only and %s writes", [input.instance.id, input.tool.name])
}

# ------------------------------------------------------------------ tool and envelope

deny_reasons contains msg if {
	input.instance != null
	not input.tool.known
	msg := sprintf("tool %s is not in the tool catalog", [input.tool.name])
}

deny_reasons contains msg if {
	input.tool.name in input.envelope.tools.deny
	msg := sprintf("tool %s is denied by the envelope", [input.tool.name])
}

deny_reasons contains msg if {
	allowed := input.envelope.tools.allow
	allowed != null
	not input.tool.name in allowed
	msg := sprintf("tool %s is not in the envelope's allow list", [input.tool.name])
}

deny_reasons contains msg if {
	ceiling := input.envelope.maxRisk
	ceiling != null
	risk_rank[input.risk.level] > risk_rank[ceiling]
	msg := sprintf("risk %s is above the envelope's maxRisk %s", [input.risk.level, ceiling])
}

# ------------------------------------------------------------------ budgets and loops

deny_reasons contains msg if {
	limit := input.envelope.budgets.perCall
	limit != null
	input.cost.estimate > limit
	msg := sprintf("BUDGET_EXCEEDED: estimated cost %s is above the per-call budget %s", [money(input.cost.estimate), money(limit)])
}

deny_reasons contains msg if {
	limit := input.envelope.budgets.perRun
	limit != null
	input.cost.run + input.cost.estimate > limit
	msg := sprintf("BUDGET_EXCEEDED: the run would spend %s, above its budget %s", [money(input.cost.run + input.cost.estimate), money(limit)])
}

deny_reasons contains msg if {
	limit := input.envelope.budgets.daily
	limit != null
	input.cost.day + input.cost.estimate > limit
	msg := sprintf("BUDGET_EXCEEDED: today would reach %s, above the daily budget %s", [money(input.cost.day + input.cost.estimate), money(limit)])
}

deny_reasons contains msg if {
	threshold := input.envelope.loop.threshold
	threshold != null
	input.loop.count >= threshold
	msg := sprintf("LOOP_DETECTED: the same call was made %d times in the loop window (threshold %d)", [input.loop.count, threshold])
}

# Money as cents, so engines never disagree on float formatting (see NOTES.md).
money(x) := sprintf("%d.%02d", [floor(round(x * 100) / 100), round(x * 100) % 100])

# ------------------------------------------------------------------ approvals

approval_reasons contains msg if {
	input.tool.name in input.envelope.tools.requireApproval
	msg := sprintf("tool %s requires approval", [input.tool.name])
}

approval_reasons contains msg if {
	above := input.envelope.approvalAbove
	above != null
	risk_rank[input.risk.level] > risk_rank[above]
	msg := sprintf("risk %s is above the envelope's approvalAbove %s", [input.risk.level, above])
}
