"""The fleet the notification tests apply (fixture data, shared by their modules)."""

from __future__ import annotations

FLEET = """\
apiVersion: arm/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: arm/v1
kind: Project
metadata: {name: apps}
---
apiVersion: arm/v1
kind: Role
metadata: {name: oncall}
spec: {permissions: ["approvals:decide", "instances:*", "tenants:*"]}
---
apiVersion: arm/v1
kind: Operator
metadata: {name: olga}
spec: {email: olga@acme.example, roles: [oncall]}
---
apiVersion: arm/v1
kind: Environment
metadata: {name: dev}
spec: {activation: immediate}
---
apiVersion: arm/v1
kind: Environment
metadata: {name: prod}
spec: {admission: {requireApproval: true, approverRoles: [oncall]}}
---
apiVersion: arm/v1
kind: ToolCatalog
metadata: {name: tools}
spec: {tools: [{name: crm.lookup, risk: GREEN}]}
---
apiVersion: arm/v1
kind: AgentTemplate
metadata: {name: app}
spec: {project: apps, role: helps, owner: team@acme.example}
---
apiVersion: arm/v1
kind: AgentVersion
metadata: {name: app@1.0.0}
spec: {template: app, genome: {model: {provider: p, name: m}}}
---
apiVersion: arm/v1
kind: Deployment
metadata: {name: app-dev}
spec: {template: app, environment: dev, version: app@1.0.0, replicas: 2}
---
apiVersion: arm/v1
kind: Deployment
metadata: {name: app-prod}
spec: {template: app, environment: prod, version: app@1.0.0, replicas: 1}
"""
