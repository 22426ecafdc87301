# Library behaviour only: fleet extensions (data.arm.ext) are replaced by nothing in every test.
package arm.decision_test

import rego.v1

import data.arm.decision

envelope := {
	"maxRisk": "RED", "approvalAbove": "YELLOW",
	"tools": {"allow": null, "deny": ["shell.exec"], "requireApproval": ["payments.refund"]},
	"budgets": {"perCall": 1000000, "perRun": 5000000, "daily": 20000000}, # micro-units: 1.00, 5.00, 20.00
	"loop": {"threshold": 5, "windowSeconds": 60},
	"approvals": {"requiredApprovals": null, "approverRoles": null, "ttlSeconds": null},
}

call(tool, level) := {
	"instance": {"id": "i-1", "state": "ACTIVE", "tenant": "acme", "template": "t", "version": "t@1"},
	"environment": {"name": "dev", "production": false},
	"tool": {"name": tool, "known": true, "risk": level, "writes": false, "external": false, "productionImpact": false},
	"risk": {"level": level, "catalogLevel": level, "reasons": []},
	"args": {},
	"envelope": envelope,
	"cost": {"estimate": 100000, "run": 0, "day": 0},
	"loop": {"count": 0},
	"approval": {"granted": false},
}

test_a_plain_call_is_allowed if {
	decision.result == {"decision": "ALLOW", "reasons": ["within the envelope"]} with input as call("crm.lookup", "GREEN") with data.arm.ext as {}
}

test_an_unknown_instance_is_denied if {
	r := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"instance": null}) with data.arm.ext as {}
	r.decision == "DENY"
	r.reasons == ["unknown instance"]
}

test_paused_quarantined_and_retired_instances_are_denied if {
	every state in ["PAUSED", "QUARANTINED", "RETIRED"] {
		r := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"instance": {"id": "i-1", "state": state}}) with data.arm.ext as {}
		r.decision == "DENY"
	}
}

test_read_only_denies_writes_only if {
	readonly := object.union(call("crm.update", "GREEN"), {"instance": {"id": "i-1", "state": "READONLY"}})
	r := decision.result with input as object.union(readonly, {"tool": object.union(readonly.tool, {"writes": true})}) with data.arm.ext as {}
	r.reasons == ["instance i-1 is read-only and crm.update writes"]
	r2 := decision.result with input as readonly with data.arm.ext as {}
	r2.decision == "ALLOW"
}

test_a_version_whose_genome_failed_verification_is_denied_through_the_bundles_data if {
	failed := {"acme": {"t@1": true}}
	r := decision.result with input as call("crm.lookup", "GREEN") with data.arm.ext as {} with data.arm.fleet.integrityFailed as failed
	r.decision == "DENY"
	r.reasons == ["VERSION_INTEGRITY_FAILED: the stored genome of version t@1 does not match its hash; every decision of its instances is denied until it verifies again ('armctl audit verify')"]
	# Another tenant's version of the same name, and no list at all, decide as before.
	other := decision.result with input as call("crm.lookup", "GREEN") with data.arm.ext as {} with data.arm.fleet.integrityFailed as {"globex": {"t@1": true}}
	other.decision == "ALLOW"
	none := decision.result with input as call("crm.lookup", "GREEN") with data.arm.ext as {} with data.arm.fleet.integrityFailed as {}
	none.decision == "ALLOW"
}

test_denied_tools_and_unknown_tools if {
	denied := decision.result with input as call("shell.exec", "GREEN") with data.arm.ext as {}
	denied.reasons == ["tool shell.exec is denied by the envelope"]
	unknown := call("mystery", "GREEN")
	r := decision.result with input as object.union(unknown, {"tool": object.union(unknown.tool, {"known": false})}) with data.arm.ext as {}
	r.reasons == ["tool mystery is not in the tool catalog"]
}

test_approval_is_needed_above_the_threshold_and_for_listed_tools if {
	risky := decision.result with input as call("web.post", "RED") with data.arm.ext as {}
	risky.decision == "NEEDS_APPROVAL"
	risky.reasons == ["risk RED is above the envelope's approvalAbove YELLOW"]
	listed := decision.result with input as call("payments.refund", "GREEN") with data.arm.ext as {}
	listed.reasons == ["tool payments.refund requires approval"]
}

test_a_granted_approval_allows_the_call if {
	granted := object.union(call("payments.refund", "GREEN"), {"approval": {"granted": true}})
	decision.result == {"decision": "ALLOW", "reasons": ["approved request"]} with input as granted with data.arm.ext as {}
}

test_a_deny_wins_over_an_approval if {
	granted := object.union(call("shell.exec", "RED"), {"approval": {"granted": true}})
	r := decision.result with input as granted with data.arm.ext as {}
	r.decision == "DENY"
}

test_budgets_and_loops if {
	over_call := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 1500000, "run": 0, "day": 0}}) with data.arm.ext as {}
	over_call.reasons == ["BUDGET_EXCEEDED: estimated cost 1.50 is above the per-call budget 1.00"]
	over_run := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 500000, "run": 4750000, "day": 0}}) with data.arm.ext as {}
	over_run.reasons == ["BUDGET_EXCEEDED: the run would spend 5.25, above its budget 5.00"]
	looping := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"loop": {"count": 5}}) with data.arm.ext as {}
	looping.reasons == ["LOOP_DETECTED: the same call was made 5 times in the loop window (threshold 5)"]
}

# ------------------------------------------------------------------ a malformed input is denied

# A field the decision reads, missing: DENY, naming the field (the other rules are not asked).
test_each_missing_field_is_denied_by_name if {
	every path in [
		"instance", "instance/id", "instance/state", "instance/tenant", "instance/template", "instance/version",
		"environment", "environment/production", "tool", "tool/name", "tool/known", "tool/risk", "tool/writes",
		"risk", "risk/level", "args", "envelope", "envelope/tools", "envelope/tools/allow", "envelope/tools/deny",
		"envelope/tools/requireApproval", "envelope/budgets", "envelope/budgets/perCall", "envelope/budgets/perRun",
		"envelope/budgets/daily", "envelope/loop", "envelope/loop/threshold", "envelope/maxRisk",
		"envelope/approvalAbove", "cost", "cost/estimate", "cost/run", "cost/day", "loop", "loop/count",
		"approval", "approval/granted",
	] {
		r := decision.result with input as json.remove(call("crm.lookup", "GREEN"), [path]) with data.arm.ext as {}
		r == {"decision": "DENY", "reasons": [sprintf("input.%s is missing", [replace(path, "/", ".")])]}
	}
}

test_no_input_at_all_is_denied if {
	decision.result == {"decision": "DENY", "reasons": ["input is missing or not an object"]} with data.arm.ext as {}
	every given in ["crm.lookup", null, 7, [], true] {
		r := decision.result with input as given with data.arm.ext as {}
		r == {"decision": "DENY", "reasons": ["input is missing or not an object"]}
	}
}

# Spending that reaches a budget exactly is allowed; one micro-unit more is not.
test_a_budget_reached_exactly_is_allowed_and_one_micro_unit_more_is_denied if {
	at_call := object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 1000000, "run": 0, "day": 0}})
	decision.result.decision == "ALLOW" with input as at_call with data.arm.ext as {}
	at_run := object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 350000, "run": 4650000, "day": 0}})
	decision.result.decision == "ALLOW" with input as at_run with data.arm.ext as {}
	over_run := object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 350001, "run": 4650000, "day": 0}})
	r := decision.result with input as over_run with data.arm.ext as {}
	r.reasons == ["BUDGET_EXCEEDED: the run would spend 5.000001, above its budget 5.00"]
	at_day := object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 20000, "run": 0, "day": 19980000}})
	decision.result.decision == "ALLOW" with input as at_day with data.arm.ext as {}
}

# Amounts are written from their digits: no rounding, at least two decimals.
test_money_is_written_exactly if {
	decision.money(0) == "0.00"
	decision.money(1) == "0.000001"
	decision.money(10000) == "0.01"
	decision.money(1005000) == "1.005"
	decision.money(1500000) == "1.50"
	decision.money(1234567) == "1.234567"
	decision.money(9007199254740991) == "9007199254.740991"
}

test_an_empty_input_is_denied_for_every_part_it_lacks if {
	r := decision.result with input as {} with data.arm.ext as {}
	r.decision == "DENY"
	r.reasons == [
		"input.approval is missing", "input.args is missing", "input.cost is missing", "input.envelope is missing",
		"input.environment is missing", "input.instance is missing", "input.loop is missing", "input.risk is missing",
		"input.tool is missing",
	]
}

# A runtime that sends the decision API's request body to the Data API is not allowed through.
test_a_request_body_instead_of_an_input_is_denied if {
	r := decision.result with input as {"instance": "acme:support-agent-dev-g1-0", "tool": "shell.exec"} with data.arm.ext as {}
	r.decision == "DENY"
	"input.instance must be null or object, not \"acme:support-agent-dev-g1-0\"" in r.reasons
	"input.tool must be an object, not \"shell.exec\"" in r.reasons
	"input.envelope is missing" in r.reasons
}

test_fields_of_the_wrong_type_are_denied_by_name if {
	every case in [
		[{"instance": {"state": "SLEEPING"}}, "input.instance.state must be one of \"ACTIVE\", \"DRAINING\", \"PAUSED\", \"PROVISIONING\", \"QUARANTINED\", \"READONLY\", \"RETIRED\", not \"SLEEPING\""],
		[{"instance": {"id": 7}}, "input.instance.id must be string, not number"],
		[{"tool": {"name": ["crm.lookup"]}}, "input.tool.name must be string, not array"],
		[{"tool": {"known": "yes"}}, "input.tool.known must be boolean, not \"yes\""],
		[{"tool": {"writes": null}}, "input.tool.writes must be boolean, not null"],
		[{"tool": {"risk": "green"}}, "input.tool.risk must be one of \"GREEN\", \"RED\", \"YELLOW\", not \"green\""],
		[{"risk": {"level": "PURPLE"}}, "input.risk.level must be one of \"GREEN\", \"RED\", \"YELLOW\", not \"PURPLE\""],
		[{"environment": {"production": "false"}}, "input.environment.production must be boolean, not \"false\""],
		[{"args": []}, "input.args must be object, not array"],
		[{"envelope": {"maxRisk": "PURPLE"}}, "input.envelope.maxRisk must be one of \"GREEN\", \"RED\", \"YELLOW\", null, not \"PURPLE\""],
		[{"envelope": {"approvalAbove": 1}}, "input.envelope.approvalAbove must be one of \"GREEN\", \"RED\", \"YELLOW\", null, not number"],
		[{"envelope": {"tools": {"deny": "shell.exec"}}}, "input.envelope.tools.deny must be array, not \"shell.exec\""],
		[{"envelope": {"tools": {"allow": {}}}}, "input.envelope.tools.allow must be array or null, not object"],
		[{"envelope": {"budgets": {"perCall": "1.00"}}}, "input.envelope.budgets.perCall must be null or a whole number of micro-units from 0 to 9007199254740991, not \"1.00\""],
		[{"envelope": {"budgets": {"perRun": 1.5}}}, "input.envelope.budgets.perRun must be null or a whole number of micro-units from 0 to 9007199254740991, not a fraction"],
		[{"envelope": {"loop": {"threshold": true}}}, "input.envelope.loop.threshold must be null or a whole number from 0 to 9007199254740991, not boolean"],
		[{"envelope": {"loop": {"threshold": 2.5}}}, "input.envelope.loop.threshold must be null or a whole number from 0 to 9007199254740991, not a fraction"],
		[{"cost": {"estimate": "0.10"}}, "input.cost.estimate must be a whole number of micro-units from 0 to 9007199254740991, not \"0.10\""],
		[{"cost": {"run": -1}}, "input.cost.run must be a whole number of micro-units from 0 to 9007199254740991, not a negative number"],
		[{"cost": {"day": 9007199254740992}}, "input.cost.day must be a whole number of micro-units from 0 to 9007199254740991, not a number above 9007199254740991"],
		[{"loop": {"count": null}}, "input.loop.count must be a whole number from 0 to 9007199254740991, not null"],
		[{"approval": {"granted": "yes"}}, "input.approval.granted must be boolean, not \"yes\""],
	] {
		r := decision.result with input as object.union(call("crm.lookup", "GREEN"), case[0]) with data.arm.ext as {}
		r == {"decision": "DENY", "reasons": [case[1]]}
	}
}

test_a_part_that_is_no_object_is_named_once if {
	r := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"envelope": {"tools": ["crm.lookup"]}}) with data.arm.ext as {}
	r.reasons == ["input.envelope.tools must be an object, not array"]
}

# An unknown instance (null) is denied for that alone, and for what else is malformed.
test_an_unknown_instance_is_denied_for_that_and_the_inputs_other_problems_only if {
	unknown := object.union(call("shell.exec", "GREEN"), {"instance": null})
	r := decision.result with input as unknown with data.arm.ext as {"f": {"deny": {"fleet says no"}}}
	r == {"decision": "DENY", "reasons": ["unknown instance"]}
	r2 := decision.result with input as json.remove(unknown, ["tool/name"]) with data.arm.ext as {}
	r2.reasons == ["input.tool.name is missing", "unknown instance"]
}

# A fleet rule cannot lift the denial of a malformed input, nor is it asked about one.
test_a_malformed_input_is_denied_whatever_the_fleet_says if {
	r := decision.result with input as json.remove(call("crm.lookup", "GREEN"), ["cost"]) with data.arm.ext as {"f": {"deny": {"fleet says no"}}}
	r.reasons == ["input.cost is missing"]
}
