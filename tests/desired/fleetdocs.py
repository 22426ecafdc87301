"""A small valid fleet as YAML text, for tests that break one thing at a time."""

from __future__ import annotations

BASE: dict[str, str] = {
    "fleet/tenant.yaml": """\
apiVersion: arm/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: arm/v1
kind: Project
metadata: {name: support}
""",
    "fleet/people.yaml": """\
apiVersion: arm/v1
kind: Role
metadata: {name: release-manager}
spec:
  permissions: ["approvals:decide"]
---
apiVersion: arm/v1
kind: Operator
metadata: {name: alice}
spec:
  email: alice@acme.example
  roles: [release-manager]
---
apiVersion: arm/v1
kind: Environment
metadata: {name: prod}
spec:
  production: true
  admission: {minLifecycle: APPROVED, requireApproval: true, approverRoles: [release-manager]}
""",
    "fleet/tools.yaml": """\
apiVersion: arm/v1
kind: ToolCatalog
metadata: {name: tools}
spec:
  tools:
    - {name: crm.lookup, risk: GREEN}
    - {name: email.send, risk: YELLOW, writes: true, external: true}
""",
    "fleet/agents/support.yaml": """\
apiVersion: arm/v1
kind: AgentTemplate
metadata: {name: support-agent}
spec:
  project: support
  role: answers customers
  owner: support@acme.example
---
apiVersion: arm/v1
kind: AgentVersion
metadata: {name: support-agent@1.0.0}
spec:
  template: support-agent
  lifecycle: DRAFT
  genome:
    model: {provider: openai, name: gpt-4o, parameters: {temperature: 0.2}}
    prompts: [{file: prompts/system.md}]
    tools: [{name: crm.lookup}]
""",
    "fleet/agents/prompts/system.md": "You help customers.\n",
    "fleet/deploy.yaml": """\
apiVersion: arm/v1
kind: Deployment
metadata: {name: support-prod}
spec:
  template: support-agent
  environment: prod
  version: support-agent@1.0.0
  replicas: 2
---
apiVersion: arm/v1
kind: PolicyEnvelope
metadata: {name: tenant-defaults}
spec:
  scope: {kind: Tenant, name: acme}
  tools: {deny: [email.send]}
""",
}
