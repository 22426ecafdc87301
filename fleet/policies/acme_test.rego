package arm.ext.acme_test

import rego.v1

import data.arm.ext.acme

refund(amount, production) := {
	"tool": {"name": "payments.refund", "risk": "RED"},
	"args": {"payment": "P-90012", "amount": amount, "currency": "EUR"},
	"environment": {"production": production},
}

email(to, production) := {
	"tool": {"name": "email.send", "risk": "YELLOW"},
	"args": {"to": to, "subject": "[Ticket #60233] Your refund"},
	"environment": {"production": production},
}

# ---------------------------------------------------------------- payments

test_refund_above_limit_denied if {
	"refunds above 500 need the billing desk" in acme.deny with input as refund(750, true)
}

test_refund_at_limit_not_denied if {
	count(acme.deny) == 0 with input as refund(500, true)
}

test_refund_as_string_denied if {
	"payments.refund needs a numeric amount" in acme.deny with input as refund("750", false)
}

test_medium_refund_needs_review if {
	"refunds above 100 are reviewed by the billing desk" in acme.approval with input as refund(250, false)
}

test_small_refund_in_dev_passes if {
	count(acme.deny) == 0 with input as refund(40, false)
	count(acme.approval) == 0 with input as refund(40, false)
}

# ---------------------------------------------------------------- production

test_red_tool_in_prod_needs_approval if {
	"payments.refund is a RED tool in production" in acme.approval with input as refund(40, true)
}

test_green_tool_in_prod_no_approval if {
	count(acme.approval) == 0 with input as {
		"tool": {"name": "kb.search-articles", "risk": "GREEN"},
		"args": {"query": "return window"},
		"environment": {"production": true},
	}
}

test_scale_to_zero_denied if {
	"k8s.scale-deployment: replicas must be between 1 and 20" in acme.deny with input as {
		"tool": {"name": "k8s.scale-deployment", "risk": "RED"},
		"args": {"deployment": "checkout", "replicas": 0},
		"environment": {"production": true},
	}
}

test_scale_within_range_allowed if {
	count(acme.deny) == 0 with input as {
		"tool": {"name": "k8s.scale-deployment", "risk": "RED"},
		"args": {"deployment": "checkout", "replicas": 6},
		"environment": {"production": false},
	}
}

# ---------------------------------------------------------------- email

test_external_email_denied_outside_prod if {
	msgs := acme.deny with input as email(["jan.kowalski@example.com"], false)
	some msg in msgs
	contains(msg, "jan.kowalski@example.com")
}

test_external_bcc_denied_outside_prod if {
	count(acme.deny) == 1 with input as {
		"tool": {"name": "email.send", "risk": "YELLOW"},
		"args": {"to": ["qa@acme.example"], "bcc": ["someone@example.org"]},
		"environment": {"production": false},
	}
}

test_internal_email_allowed_outside_prod if {
	count(acme.deny) == 0 with input as email(["QA-Team@Acme.example"], false)
}

test_external_email_allowed_in_prod if {
	count(acme.deny) == 0 with input as email(["jan.kowalski@example.com"], true)
}

# ---------------------------------------------------------------- what every engine must agree on

# A missing amount is no number: denied (`not is_number(input.args.amount)` would be undefined on OPA).
test_refund_without_amount_denied if {
	"payments.refund needs a numeric amount" in acme.deny with input as {
		"tool": {"name": "payments.refund", "risk": "RED"},
		"args": {"payment": "P-90012", "currency": "EUR"},
		"environment": {"production": false},
	}
}

test_refund_with_null_amount_denied if {
	"payments.refund needs a numeric amount" in acme.deny with input as refund(null, false)
}

test_refund_just_above_limit_denied if {
	"refunds above 500 need the billing desk" in acme.deny with input as refund(500.5, false)
}

test_refund_without_any_arguments_denied if {
	"payments.refund needs a numeric amount" in acme.deny with input as {
		"tool": {"name": "payments.refund", "risk": "RED"},
		"environment": {"production": false},
	}
}

test_scale_without_replicas_denied if {
	"k8s.scale-deployment: replicas must be between 1 and 20" in acme.deny with input as {
		"tool": {"name": "k8s.scale-deployment", "risk": "RED"},
		"args": {"deployment": "checkout"},
		"environment": {"production": false},
	}
}

test_scale_to_a_fraction_denied if {
	"k8s.scale-deployment: replicas must be between 1 and 20" in acme.deny with input as {
		"tool": {"name": "k8s.scale-deployment", "risk": "RED"},
		"args": {"deployment": "checkout", "replicas": 2.5},
		"environment": {"production": false},
	}
}

# A single recipient may be given as a string: it is checked like one in a list.
test_external_recipient_as_a_string_denied_outside_prod if {
	acme.deny == {"outside production, email.send may only reach acme.example addresses (not a@example.com)"} with input as email("a@example.com", false)
}

test_internal_recipient_as_a_string_allowed_outside_prod if {
	count(acme.deny) == 0 with input as email("qa@acme.example", false)
}

test_a_recipient_that_is_no_address_is_denied_everywhere if {
	every to in [null, 7, {"address": "qa@acme.example"}, ["qa@acme.example", 7]] {
		every production in [false, true] {
			acme.deny == {"email.send: to must be an address or a list of addresses"} with input as email(to, production)
		}
	}
}

test_an_address_with_two_at_signs_is_not_internal if {
	count(acme.deny) == 1 with input as email(["qa@acme.example@elsewhere.example"], false)
}

test_no_environment_counts_as_outside_production if {
	count(acme.deny) == 1 with input as {"tool": {"name": "email.send"}, "args": {"to": ["x@example.com"]}}
}
