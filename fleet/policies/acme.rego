# METADATA
# title: Acme's own tool-call rules
# description: >-
#   Evaluated next to the built-in library in policies/. `deny` refuses the call; `approval`
#   turns an otherwise allowed call into NEEDS_APPROVAL. Each message is shown to the runtime
#   and recorded as a reason. Written to mean the same on every Rego engine: optional arguments
#   are read with object.get, types are checked before a value is iterated or given to a builtin,
#   and no rule negates a call on a value that may be missing (`not f(input.x)` is undefined on
#   OPA when x is missing, true on regorus; `not input.x`, a reference, is true on both).
package arm.ext.acme

import rego.v1

refund_limit := 500

review_above := 100

approved_email_domains := {"acme.example"}

# The call's arguments; {} when there are none, or when what was sent is no object.
args := input.args if {
	is_object(input.args)
} else := {}

# ---------------------------------------------------------------- payments

deny contains "payments.refund needs a numeric amount" if {
	input.tool.name == "payments.refund"
	not is_number(object.get(args, "amount", null))
}

deny contains "refunds above 500 need the billing desk" if {
	input.tool.name == "payments.refund"
	amount := object.get(args, "amount", null)
	is_number(amount)
	amount > refund_limit
}

approval contains "refunds above 100 are reviewed by the billing desk" if {
	input.tool.name == "payments.refund"
	amount := object.get(args, "amount", null)
	is_number(amount)
	amount > review_above
	amount <= refund_limit
}

# ---------------------------------------------------------------- email

recipient_fields := ["to", "cc", "bcc"]

# A recipient field holds one address or a list of them; anything else is refused, in production too.
deny contains msg if {
	input.tool.name == "email.send"
	some field in recipient_fields
	not addresses(object.get(args, field, []))
	msg := sprintf("email.send: %s must be an address or a list of addresses", [field])
}

addresses(value) if is_string(value)

addresses(value) if {
	is_array(value)
	every address in value {
		is_string(address)
	}
}

# Outside production an agent may only email Acme's own addresses, so test
# traffic never reaches a real customer.
deny contains msg if {
	input.tool.name == "email.send"
	not input.environment.production # a reference, not a call: true when missing, on every engine
	some rcpt in recipients
	not internal_address(rcpt)
	msg := sprintf("outside production, email.send may only reach acme.example addresses (not %s)", [rcpt])
}

# Every address the call names, whether a field holds one or a list.
recipients contains rcpt if {
	some field in recipient_fields
	value := object.get(args, field, [])
	is_array(value)
	some rcpt in value
	is_string(rcpt)
}

recipients contains rcpt if {
	some field in recipient_fields
	rcpt := object.get(args, field, [])
	is_string(rcpt)
}

internal_address(addr) if {
	parts := split(lower(addr), "@")
	count(parts) == 2
	parts[1] in approved_email_domains
}

# ---------------------------------------------------------------- production

# Every RED tool call in production gets a human, whatever the envelope says.
approval contains msg if {
	input.environment.production == true
	input.tool.risk == "RED"
	is_string(input.tool.name)
	msg := sprintf("%s is a RED tool in production", [input.tool.name])
}

# Scaling anything to zero, or past 20 replicas, is never an agent's decision.
deny contains "k8s.scale-deployment: replicas must be between 1 and 20" if {
	input.tool.name == "k8s.scale-deployment"
	not valid_replicas(object.get(args, "replicas", null))
}

valid_replicas(n) if {
	is_number(n)
	n >= 1
	n <= 20
	round(n) == n
}
