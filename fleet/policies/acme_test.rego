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
