# Library behaviour only: fleet extensions (data.arm.ext) are replaced by nothing in every test.
package arm.decision_test

import rego.v1

import data.arm.decision

envelope := {
	"maxRisk": "RED", "approvalAbove": "YELLOW",
	"tools": {"allow": null, "deny": ["shell.exec"], "requireApproval": ["payments.refund"]},
	"budgets": {"perCall": 1.0, "perRun": 5.0, "daily": 20.0},
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
	"cost": {"estimate": 0.1, "run": 0, "day": 0},
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
	over_call := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 1.5, "run": 0, "day": 0}}) with data.arm.ext as {}
	over_call.reasons == ["BUDGET_EXCEEDED: estimated cost 1.50 is above the per-call budget 1.00"]
	over_run := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"cost": {"estimate": 0.5, "run": 4.75, "day": 0}}) with data.arm.ext as {}
	over_run.reasons == ["BUDGET_EXCEEDED: the run would spend 5.25, above its budget 5.00"]
	looping := decision.result with input as object.union(call("crm.lookup", "GREEN"), {"loop": {"count": 5}}) with data.arm.ext as {}
	looping.reasons == ["LOOP_DETECTED: the same call was made 5 times in the loop window (threshold 5)"]
}
