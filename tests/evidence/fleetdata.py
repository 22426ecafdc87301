"""The fleet the evidence tests run on: the reconcile scenario's fleet plus suites of every
category, a second version with a parent (a regression baseline), and a second template (for
ci tokens limited to templates)."""

from __future__ import annotations

import datetime as dt

from tests.reconcile import scenario
from tests.reconcile.scenario import deployment, version

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

SUITES = """\
apiVersion: arm/v1
kind: EvaluationSuite
metadata: {name: jailbreak}
spec:
  category: safety
  metrics: [{name: refusal_rate, threshold: 1.0}]
  minSamples: 100
  appliesTo: {templates: [app, other]}
  onFailure: readonly
---
apiVersion: arm/v1
kind: EvaluationSuite
metadata: {name: drift}
spec:
  category: regression
  metrics: [{name: resolution, threshold: 0.8}]
  minSamples: 100
  maxRegression: 0.02
  appliesTo: {templates: [app]}
  requiredFor: {steps: [], environments: [prod]}
  onFailure: pause
"""

OTHER = """\
apiVersion: arm/v1
kind: AgentTemplate
metadata: {name: other}
spec: {project: apps, role: helps too, owner: team@acme.example}
---
apiVersion: arm/v1
kind: AgentVersion
metadata: {name: other@1.0.0}
spec:
  template: other
  lifecycle: TESTING
  genome: {model: {provider: openai, name: gpt-4o}}
"""


def files() -> dict[str, str | bytes | None]:
    """app@1.0.0 wants CANDIDATE and runs in dev (2 instances, active at once); app@2.0.0, its
    child, waits in DRAFT; other@1.0.0 is another template's."""
    return scenario.first_commit_files() | {
        "fleet/app/v1.yaml": version("1.0.0", "CANDIDATE"),
        "fleet/app/v2.yaml": version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
        "fleet/app/prompts/v2.md": "You help, briefly.\n",
        "fleet/suites.yaml": SUITES,
        "fleet/other.yaml": OTHER,
    }


def prod_files() -> dict[str, str | bytes | None]:
    """The next commit: app@1.0.0 to prod too (prod admits APPROVED: it waits)."""
    return {"fleet/deploy-prod.yaml": deployment("app-prod", "prod", "1.0.0", 1)}
