"""A staging environment and a Canary deployment of the scenario's app, for the canary tests."""

from __future__ import annotations

from tests.reconcile import scenario
from tests.reconcile.scenario import version

STAGING = """\
---
apiVersion: arm/v1
kind: Environment
metadata: {name: staging}
spec:
  admission: {minLifecycle: DRAFT}
"""


def canary(number: str, *, replicas: int = 3, auto_rollback: bool = False) -> str:
    return f"""\
apiVersion: arm/v1
kind: Deployment
metadata: {{name: app-staging}}
spec:
  template: app
  environment: staging
  version: app@{number}
  replicas: {replicas}
  strategy: {{type: Canary, steps: [10, 50, 100], autoRollback: {str(auto_rollback).lower()}}}
"""


def fleet_files(number: str, **kwargs: bool) -> dict[str, str | bytes | None]:
    return {
        "fleet/base.yaml": scenario.BASE + STAGING,
        "fleet/app/template.yaml": scenario.TEMPLATE,
        "fleet/app/v1.yaml": version("1.0.0", "TESTING"),
        "fleet/app/v2.yaml": version("2.0.0", "TESTING", parent="1.0.0", prompt="prompts/v2.md"),
        "fleet/app/v3.yaml": version("3.0.0", "TESTING", parent="2.0.0", prompt="prompts/v3.md"),
        "fleet/app/prompts/v1.md": "You help.\n",
        "fleet/app/prompts/v2.md": "You help, briefly.\n",
        "fleet/app/prompts/v3.md": "You help, briefly and kindly.\n",
        "fleet/deploy.yaml": canary(number, **kwargs),
    }
