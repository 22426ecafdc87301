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
# Every field above is required (the tool's "external" and "productionImpact", the environment's
# name and the risk's "catalogLevel" and "reasons" excepted): an input that lacks one or holds one
# of the wrong type is DENY with a reason naming it ("input.tool.name is missing"), and so is an
# unknown instance, for that alone. The decision fails closed.
# Fleet modules add reasons with `deny contains msg` / `approval contains msg` in any package
# directly under data.arm.ext; they can make a decision stricter, never lift a deny. They are
# gathered into deny_reasons and approval_reasons by extensions.rego.
#
# Written for the engine's cost: one partial set per outcome (a rule that unions two sets is
# another evaluation), sets inline (a rule's value is rebuilt on every evaluation).
package arm.decision

import rego.v1

risk_rank := {"GREEN": 0, "YELLOW": 1, "RED": 2}

result := {"decision": "DENY", "reasons": sort(problems)} if {
	not well_formed
	problems := input_problems
	problems != set()
} else := unchecked

# The decision for an input known to be well formed, without checking it: for such an input it is
# result. The reconciler asks it for the inputs it builds itself (reconciler/policy/deciding.py:
# well formed by construction; an unknown instance's goes to result), which saves ~25 µs a
# decision. Ask result for any other input: one missing a field can be ALLOWed here.
unchecked := {"decision": "DENY", "reasons": sort(deny_reasons)} if {
	deny_reasons != set()
} else := {"decision": "NEEDS_APPROVAL", "reasons": sort(approval_reasons)} if {
	approval_reasons != set()
	not input.approval.granted
} else := {"decision": "ALLOW", "reasons": ["approved request"]} if {
	input.approval.granted
} else := {"decision": "ALLOW", "reasons": ["within the envelope"]}

# ------------------------------------------------------------------ the input itself

# Fail closed. A rule below whose field is missing does not fire (an undefined expression leaves
# its body undefined, not false), so an input lacking a field the decision reads would be allowed.
# well_formed is the check result pays for on every input: each expression of a body costs the
# engine about a microsecond, so the types are compared as one array. Only an input that fails it
# (or names no instance) has its fields looked at one by one, and is denied for its problems
# alone: the rules below are not asked what they make of it. An engine that evaluates every rule
# anyway (regorus under `with`, a query of the whole package) must not fail on one either, so the
# rules that compute with input values check the types of what they compute with.

well_formed if {
	instance := input.instance
	tool := input.tool
	envelope := input.envelope
	[
		type_name(instance.id), type_name(instance.tenant), type_name(instance.template), type_name(instance.version),
		type_name(input.environment.production), type_name(tool.name), type_name(tool.known), type_name(tool.writes),
		type_name(input.args), type_name(envelope.tools.deny), type_name(envelope.tools.requireApproval),
		type_name(input.cost.estimate), type_name(input.cost.run), type_name(input.cost.day), type_name(input.loop.count),
		type_name(input.approval.granted),
	] == [
		"string", "string", "string", "string",
		"boolean", "string", "boolean", "boolean",
		"object", "array", "array",
		"number", "number", "number", "number",
		"boolean",
	]
	type_name(envelope.tools.allow) in {"array", "null"}
	type_name(envelope.budgets.perCall) in {"number", "null"}
	type_name(envelope.budgets.perRun) in {"number", "null"}
	type_name(envelope.budgets.daily) in {"number", "null"}
	type_name(envelope.loop.threshold) in {"number", "null"}
	instance.state in {"PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"}
	tool.risk in {"GREEN", "YELLOW", "RED"}
	input.risk.level in {"GREEN", "YELLOW", "RED"}
	envelope.maxRisk in {"GREEN", "YELLOW", "RED", null}
	envelope.approvalAbove in {"GREEN", "YELLOW", "RED", null}
}

# Why an input is not well formed, field by field. An unknown instance (null) is denied for that
# alone: nothing else about the call matters.
input_problems contains "input is missing or not an object" if not is_object(input)

input_problems contains "unknown instance" if input.instance == null

input_problems contains msg if {
	is_object(input)
	some field in [
		[["instance"], {"object", "null"}],
		[["environment", "production"], {"boolean"}],
		[["tool", "name"], {"string"}],
		[["tool", "known"], {"boolean"}],
		[["tool", "writes"], {"boolean"}],
		[["args"], {"object"}],
		[["envelope", "tools", "allow"], {"array", "null"}],
		[["envelope", "tools", "deny"], {"array"}],
		[["envelope", "tools", "requireApproval"], {"array"}],
		[["envelope", "budgets", "perCall"], {"number", "null"}],
		[["envelope", "budgets", "perRun"], {"number", "null"}],
		[["envelope", "budgets", "daily"], {"number", "null"}],
		[["envelope", "loop", "threshold"], {"number", "null"}],
		[["cost", "estimate"], {"number"}],
		[["cost", "run"], {"number"}],
		[["cost", "day"], {"number"}],
		[["loop", "count"], {"number"}],
		[["approval", "granted"], {"boolean"}],
	]
	[path, types] := field
	value := object.get(input, path, set()) # set(): no JSON input holds one, so it marks a missing field
	not type_name(value) in types
	msg := malformed(path, value, concat(" or ", sort(types)))
}

input_problems contains msg if {
	is_object(input)
	some field in [
		[["tool", "risk"], {"GREEN", "YELLOW", "RED"}],
		[["risk", "level"], {"GREEN", "YELLOW", "RED"}],
		[["envelope", "maxRisk"], {"GREEN", "YELLOW", "RED", null}],
		[["envelope", "approvalAbove"], {"GREEN", "YELLOW", "RED", null}],
	]
	[path, values] := field
	value := object.get(input, path, set())
	not value in values
	msg := malformed(path, value, one_of(values))
}

input_problems contains msg if {
	is_object(input.instance)
	some field in ["id", "tenant", "template", "version"]
	value := object.get(input.instance, field, set())
	not is_string(value)
	msg := malformed(["instance", field], value, "string")
}

input_problems contains msg if {
	is_object(input.instance)
	states := {"PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"}
	value := object.get(input.instance, "state", set())
	not value in states
	msg := malformed(["instance", "state"], value, one_of(states))
}

# The field at path is missing (or a part of its path is, or is no object), else its value is wrong.
malformed(path, value, want) := missing(array.slice(path, 0, gone)) if {
	is_set(value)
	gone := [n | some n in numbers.range(1, count(path)); is_set(object.get(input, array.slice(path, 0, n), set()))][0]
} else := sprintf("input.%s must be %s, not %s", [concat(".", path), want, shown(value)])

missing(part) := sprintf("input.%s must be an object, not %s", [concat(".", parent), shown(value)]) if {
	parent := array.slice(part, 0, count(part) - 1)
	parent != []
	value := object.get(input, parent, set())
	not is_object(value)
} else := sprintf("input.%s is missing", [concat(".", part)])

one_of(values) := concat(" ", ["one of", concat(", ", sort([shown(v) | some v in values]))])

# Strings as JSON, other values by their type: a value may be long, and engines format numbers
# differently (regorus prints 1e-05 where OPA prints 0.00001).
shown(value) := json.marshal(value) if {
	is_string(value)
} else := type_name(value)

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
	is_number(limit)
	input.cost.estimate > limit
	is_number(input.cost.estimate) # after the comparison, which never fails: only an exceeded budget pays for it
	msg := sprintf("BUDGET_EXCEEDED: estimated cost %s is above the per-call budget %s", [money(input.cost.estimate), money(limit)])
}

deny_reasons contains msg if {
	limit := input.envelope.budgets.perRun
	is_number(limit)
	is_number(input.cost.run)
	is_number(input.cost.estimate)
	input.cost.run + input.cost.estimate > limit
	msg := sprintf("BUDGET_EXCEEDED: the run would spend %s, above its budget %s", [money(input.cost.run + input.cost.estimate), money(limit)])
}

deny_reasons contains msg if {
	limit := input.envelope.budgets.daily
	is_number(limit)
	is_number(input.cost.day)
	is_number(input.cost.estimate)
	input.cost.day + input.cost.estimate > limit
	msg := sprintf("BUDGET_EXCEEDED: today would reach %s, above the daily budget %s", [money(input.cost.day + input.cost.estimate), money(limit)])
}

deny_reasons contains msg if {
	threshold := input.envelope.loop.threshold
	is_number(threshold)
	input.loop.count >= threshold
	is_number(input.loop.count)
	msg := sprintf("LOOP_DETECTED: the same call was made %d times in the loop window (threshold %d)", [input.loop.count, threshold])
}

# Money as cents, so engines never disagree on float formatting.
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
