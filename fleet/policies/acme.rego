# Acme's own tool-call rules, evaluated next to the built-in library in policies/.
# `deny` refuses the call; `approval` turns an otherwise allowed call into
# NEEDS_APPROVAL. Each message is shown to the runtime and recorded as a reason.
package arm.ext.acme

import rego.v1

refund_limit := 500

review_above := 100

approved_email_domains := {"acme.example"}

# ---------------------------------------------------------------- payments

deny contains msg if {
	input.tool.name == "payments.refund"
	not is_number(input.args.amount)
	msg := "payments.refund needs a numeric amount"
}

deny contains msg if {
	input.tool.name == "payments.refund"
	is_number(input.args.amount)
	input.args.amount > refund_limit
	msg := "refunds above 500 need the billing desk"
}

approval contains msg if {
	input.tool.name == "payments.refund"
	is_number(input.args.amount)
	input.args.amount > review_above
	input.args.amount <= refund_limit
	msg := "refunds above 100 are reviewed by the billing desk"
}

# ---------------------------------------------------------------- email

# Outside production an agent may only email Acme's own addresses, so test
# traffic never reaches a real customer.
deny contains msg if {
	input.tool.name == "email.send"
	not input.environment.production
	some rcpt in recipients
	not internal_address(rcpt)
	msg := sprintf("outside production, email.send may only reach acme.example addresses (not %s)", [rcpt])
}

recipients contains rcpt if {
	some field in ["to", "cc", "bcc"]
	some rcpt in object.get(input.args, field, [])
}

internal_address(addr) if {
	parts := split(lower(addr), "@")
	count(parts) == 2
	parts[1] in approved_email_domains
}

# ---------------------------------------------------------------- production

# Every RED tool call in production gets a human, whatever the envelope says.
approval contains msg if {
	input.environment.production
	input.tool.risk == "RED"
	msg := sprintf("%s is a RED tool in production", [input.tool.name])
}

# Scaling anything to zero, or past 20 replicas, is never an agent's decision.
deny contains msg if {
	input.tool.name == "k8s.scale-deployment"
	not valid_replicas(input.args.replicas)
	msg := "k8s.scale-deployment: replicas must be between 1 and 20"
}

valid_replicas(n) if {
	is_number(n)
	n >= 1
	n <= 20
}
