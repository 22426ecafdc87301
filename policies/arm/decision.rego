# The decision entry point: may this instance make this tool call now?
#
# Input (built by reconciler/policy/inputs.py):
#   {"instance": {"id", "state", "tenant", "template", "version"} | null,
#    "environment": {"name", "production"},
#    "tool": {"name", "known", "risk" (catalog level), "writes", "external", "productionImpact"},
#    "risk": {"level", "catalogLevel", "reasons": [...]},      # after the arguments raised it
#    "args": {...},
#    "envelope": effective envelope (see reconciler/policy/envelopes.py), its budgets in micro-units,
#    "cost": {"estimate", "run", "day"},                      # micro-units: spent so far in the run and today
#    "loop": {"count"},                                        # same call within the loop window
#    "approval": {"granted": bool}}                            # an approved request for exactly this call
#
# Money is a whole number of micro-units (1 = one millionth of the fleet's currency unit, so 1.5
# is 1500000), from 0 to 9007199254740991: engines add and compare whole numbers exactly, where
# they round fractions differently. A budget is exceeded when the spending would go above it;
# spending that reaches it exactly is allowed. Loop counts and thresholds are whole numbers too.
#
# Output: data.arm.decision.result = {"decision": "ALLOW" | "NEEDS_APPROVAL" | "DENY", "reasons": [...]}
# for any input at all, none included. Every field above is required (the tool's "external" and
# "productionImpact", the environment's name and the risk's "catalogLevel" and "reasons"
# excepted): an input that lacks one or holds one of the wrong type is DENY with a reason naming
# it ("input.tool.name is missing"), and so is an unknown instance, for that alone. The decision
# fails closed: whatever is undefined ends in DENY, never in ALLOW.
# Fleet modules add reasons with `deny contains msg` / `approval contains msg` in any package
# directly under data.arm.ext; they can make a decision stricter, never lift a deny. They are
# gathered into deny_reasons and approval_reasons by extensions.rego.
#
# Written for every engine: rules never negate a call on a value that may be missing (`not
# f(input.x)` is true on one engine and undefined on another; `not input.x`, a reference, is true
# on both), check types before they compute, and format numbers themselves (engines print and
# round them differently). Written for the
# engine's cost too: one partial set per outcome (a rule that unions two sets is another
# evaluation), sets inline (a rule's value is rebuilt on every evaluation).
package arm.decision

import rego.v1

risk_rank := {"GREEN": 0, "YELLOW": 1, "RED": 2}

#: The largest amount or count the decision takes: 2^53 - 1, what every JSON reader holds exactly.
max_whole := 9007199254740991

# METADATA
# title: Tool-call decision
# description: >-
#   ALLOW, NEEDS_APPROVAL or DENY, with reasons, for any input: a malformed one (or none) is
#   DENY with a reason naming what is wrong.
# entrypoint: true
result := unchecked if {
	well_formed
} else := {"decision": "DENY", "reasons": malformed_reasons}

default result := {"decision": "DENY", "reasons": ["the decision could not be made for this input"]}

malformed_reasons := sort(input_problems) if {
	count(input_problems) > 0
} else := ["the input could not be checked"]

# METADATA
# title: Tool-call decision, input unchecked
# description: >-
#   The decision for an input known to be well formed, without checking it: for such an input
#   it is result. The reconciler asks it for the inputs it builds itself (well formed by
#   construction), which saves ~25 µs a decision. Ask result for any other input: one missing a
#   field can be ALLOWed here.
# entrypoint: true
unchecked := {"decision": "DENY", "reasons": sort(deny_reasons)} if {
	deny_reasons != set()
} else := {"decision": "NEEDS_APPROVAL", "reasons": sort(approval_reasons)} if {
	approval_reasons != set()
	not input.approval.granted
} else := {"decision": "ALLOW", "reasons": ["approved request"]} if {
	input.approval.granted == true
} else := {"decision": "ALLOW", "reasons": ["within the envelope"]}

# ------------------------------------------------------------------ the input itself

# Fail closed. A rule below whose field is missing does not fire (an undefined expression leaves
# its body undefined, not false), so an input lacking a field the decision reads would be allowed.
# well_formed is the check result pays for on every input: each expression of a body costs the
# engine about a microsecond, so the types are compared as one array. Only an input that fails it
# (or names no instance) has its fields looked at one by one, and is denied for its problems
# alone: the rules below are not asked what they make of it. An engine that evaluates every rule
# anyway (regorus under `with`, a query of the whole package) must not fail on one either, and
# must give the same answer on every engine, so the rules that compute with input values check
# the types of what they compute with.

well_formed if {
	instance := input.instance
	tool := input.tool
	envelope := input.envelope
	[
		type_name(instance.id), type_name(instance.tenant), type_name(instance.template), type_name(instance.version),
		type_name(input.environment.production), type_name(tool.name), type_name(tool.known), type_name(tool.writes),
		type_name(input.args), type_name(envelope.tools.deny), type_name(envelope.tools.requireApproval),
		type_name(input.approval.granted),
	] == [
		"string", "string", "string", "string",
		"boolean", "string", "boolean", "boolean",
		"object", "array", "array",
		"boolean",
	]
	type_name(envelope.tools.allow) in {"array", "null"}
	whole(input.cost.estimate)
	whole(input.cost.run)
	whole(input.cost.day)
	whole(input.loop.count)
	whole_or_null(envelope.budgets.perCall)
	whole_or_null(envelope.budgets.perRun)
	whole_or_null(envelope.budgets.daily)
	whole_or_null(envelope.loop.threshold)
	instance.state in {"PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"}
	tool.risk in {"GREEN", "YELLOW", "RED"}
	input.risk.level in {"GREEN", "YELLOW", "RED"}
	envelope.maxRisk in {"GREEN", "YELLOW", "RED", null}
	envelope.approvalAbove in {"GREEN", "YELLOW", "RED", null}
}

# A whole number from 0 to max_whole (the range first: an engine may not round a huge number).
whole(x) if {
	is_number(x)
	x >= 0
	x <= max_whole
	round(x) == x
}

whole_or_null(x) if x == null

whole_or_null(x) if whole(x)

# Whether the input is an object at all. A rule of its own, so that `not input_is_object` is
# true when there is no input (`not is_object(input)` is undefined then on OPA).
input_is_object if is_object(input)

# Why an input is not well formed, field by field. An unknown instance (null) is denied for that
# alone: nothing else about the call matters.
input_problems contains "input is missing or not an object" if not input_is_object

input_problems contains "unknown instance" if input.instance == null

input_problems contains msg if {
	input_is_object
	some field in [
		[["instance"], "null or object"],
		[["environment", "production"], "boolean"],
		[["tool", "name"], "string"],
		[["tool", "known"], "boolean"],
		[["tool", "writes"], "boolean"],
		[["args"], "object"],
		[["envelope", "tools", "allow"], "array or null"],
		[["envelope", "tools", "deny"], "array"],
		[["envelope", "tools", "requireApproval"], "array"],
		[["envelope", "budgets", "perCall"], "null or micro-units"],
		[["envelope", "budgets", "perRun"], "null or micro-units"],
		[["envelope", "budgets", "daily"], "null or micro-units"],
		[["envelope", "loop", "threshold"], "null or whole number"],
		[["cost", "estimate"], "micro-units"],
		[["cost", "run"], "micro-units"],
		[["cost", "day"], "micro-units"],
		[["loop", "count"], "whole number"],
		[["approval", "granted"], "boolean"],
	]
	[path, want] := field
	value := object.get(input, path, set()) # set(): no JSON input holds one, so it marks a missing field
	not fits(value, want)
	msg := malformed(path, value, wanted[want])
}

input_problems contains msg if {
	input_is_object
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

fits(value, "string") if is_string(value)

fits(value, "boolean") if is_boolean(value)

fits(value, "object") if is_object(value)

fits(value, "array") if is_array(value)

fits(value, "null or object") if type_name(value) in {"null", "object"}

fits(value, "array or null") if type_name(value) in {"array", "null"}

fits(value, "micro-units") if whole(value)

fits(value, "whole number") if whole(value)

fits(value, "null or micro-units") if whole_or_null(value)

fits(value, "null or whole number") if whole_or_null(value)

wanted := {
	"string": "string",
	"boolean": "boolean",
	"object": "object",
	"array": "array",
	"null or object": "null or object",
	"array or null": "array or null",
	"micro-units": "a whole number of micro-units from 0 to 9007199254740991",
	"whole number": "a whole number from 0 to 9007199254740991",
	"null or micro-units": "null or a whole number of micro-units from 0 to 9007199254740991",
	"null or whole number": "null or a whole number from 0 to 9007199254740991",
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

# Strings as JSON, numbers by what is wrong with them, other values by their type: a value may be
# long, and engines print numbers differently (one prints 1e-05 where another prints 0.00001).
shown(value) := quoted(value) if {
	is_string(value)
} else := "a negative number" if {
	is_number(value)
	value < 0
} else := "a number above 9007199254740991" if {
	is_number(value)
	value > max_whole
} else := "a fraction" if {
	is_number(value)
	round(value) != value
} else := type_name(value)

# A string as JSON writes it, the same on every engine: OPA's json.marshal escapes <, > and & as
# HTML does, and U+2028 and U+2029, where regorus writes them as they are.
quoted(s) := strings.replace_n(
	{"\\u003c": "<", "\\u003e": ">", "\\u0026": "&", "\\u2028": "\u2028", "\\u2029": "\u2029"},
	json.marshal(s),
)

# ------------------------------------------------------------------ instance

deny_reasons contains "unknown instance" if input.instance == null

deny_reasons contains msg if {
	input.instance.state in {"PAUSED", "QUARANTINED", "RETIRED"}
	msg := sprintf("instance %s is %s", [text(input.instance.id), input.instance.state])
}

deny_reasons contains msg if {
	input.instance.state == "READONLY"
	input.tool.writes == true
	msg := sprintf("instance %s is read-only and %s writes", [text(input.instance.id), text(input.tool.name)])
}

# A version whose stored genome failed verification: every decision of its instances is denied
# until it verifies again. The reconciler's decider denies these itself; the rule is what makes an
# OPA sidecar (and the Data API) deny them too, from the bundle's data.arm.fleet.integrityFailed
# ({tenant: {version: true}}). Without that data the rule does not fire.
deny_reasons contains msg if {
	object.get(data.arm.fleet.integrityFailed, [input.instance.tenant, input.instance.version], false) == true
	msg := sprintf(
		"VERSION_INTEGRITY_FAILED: the stored genome of version %s does not match its hash; every decision of its instances is denied until it verifies again ('armctl audit verify')",
		[text(input.instance.version)],
	)
}

# ------------------------------------------------------------------ tool and envelope

deny_reasons contains msg if {
	not input.tool.known
	msg := sprintf("tool %s is not in the tool catalog", [text(input.tool.name)])
}

# `x in y` neither fails nor differs between engines whatever x and y are; only a name that is
# a string is printed (after the test: only a reason that fires pays for it).
deny_reasons contains msg if {
	input.tool.name in input.envelope.tools.deny
	is_string(input.tool.name)
	msg := sprintf("tool %s is denied by the envelope", [input.tool.name])
}

deny_reasons contains msg if {
	allowed := input.envelope.tools.allow
	is_array(allowed)
	name := input.tool.name # bound first: `not input.tool.name in allowed` is undefined on OPA when it is missing
	not name in allowed
	is_string(name)
	msg := sprintf("tool %s is not in the envelope's allow list", [name])
}

deny_reasons contains msg if {
	ceiling := input.envelope.maxRisk
	risk_rank[input.risk.level] > risk_rank[ceiling]
	msg := sprintf("risk %s is above the envelope's maxRisk %s", [input.risk.level, ceiling])
}

# A value a reason names: a string as it is, anything else (a malformed input's) by its type.
text(value) := value if {
	is_string(value)
} else := type_name(value)

# ------------------------------------------------------------------ budgets and loops

deny_reasons contains msg if {
	limit := input.envelope.budgets.perCall
	estimate := input.cost.estimate
	estimate > limit
	whole(limit) # after the comparison, which never fails: only an exceeded budget pays for the checks
	whole(estimate)
	msg := sprintf("BUDGET_EXCEEDED: estimated cost %s is above the per-call budget %s", [money(estimate), money(limit)])
}

deny_reasons contains msg if {
	limit := input.envelope.budgets.perRun
	is_number(limit)
	is_number(input.cost.run)
	is_number(input.cost.estimate)
	spend := input.cost.run + input.cost.estimate
	spend > limit
	whole(limit) # after the comparison: only an exceeded budget pays for the checks
	whole(input.cost.run)
	whole(input.cost.estimate)
	msg := sprintf("BUDGET_EXCEEDED: the run would spend %s, above its budget %s", [money(spend), money(limit)])
}

deny_reasons contains msg if {
	limit := input.envelope.budgets.daily
	is_number(limit)
	is_number(input.cost.day)
	is_number(input.cost.estimate)
	spend := input.cost.day + input.cost.estimate
	spend > limit
	whole(limit)
	whole(input.cost.day)
	whole(input.cost.estimate)
	msg := sprintf("BUDGET_EXCEEDED: today would reach %s, above the daily budget %s", [money(spend), money(limit)])
}

deny_reasons contains msg if {
	threshold := input.envelope.loop.threshold
	repeats := input.loop.count
	repeats >= threshold
	whole(threshold)
	whole(repeats)
	msg := sprintf("LOOP_DETECTED: the same call was made %s times in the loop window (threshold %s)", [format_int(repeats, 10), format_int(threshold, 10)])
}

# Micro-units as an amount of the currency, written from the digits alone (no arithmetic, no
# rounding): at least two decimals, more only when they are not zero. 1500000 is "1.50",
# 1 is "0.000001", 1234567 is "1.234567".
money(micros) := sprintf("%s.%s", [whole_part, decimals]) if {
	digits := padded(format_int(micros, 10))
	n := count(digits)
	whole_part := substring(digits, 0, n - 6)
	fraction := substring(digits, n - 6, 6)
	decimals := cents(fraction, trim_right(fraction, "0"))
}

# At least seven digits: one before the point, six after.
padded(digits) := concat("", [substring("000000", 0, 7 - count(digits)), digits]) if {
	count(digits) < 7
} else := digits

cents(fraction, trimmed) := substring(fraction, 0, 2) if {
	count(trimmed) < 2
} else := trimmed

# ------------------------------------------------------------------ approvals

approval_reasons contains msg if {
	input.tool.name in input.envelope.tools.requireApproval
	is_string(input.tool.name)
	msg := sprintf("tool %s requires approval", [input.tool.name])
}

approval_reasons contains msg if {
	above := input.envelope.approvalAbove
	risk_rank[input.risk.level] > risk_rank[above]
	msg := sprintf("risk %s is above the envelope's approvalAbove %s", [input.risk.level, above])
}
