"""The EvaluationSuite kind is validated like every kind (each problem names its file, document and
field), and evaluation results stated in a version's manifest are reported as ignored."""

from __future__ import annotations

import json

import pytest

from reconciler.desired import repository
from reconciler.reconcile import validating
from tests import armctl
from tests.conftest import GitRepo
from tests.desired.fleetdocs import BASE

VALID = """\
apiVersion: arm/v1
kind: EvaluationSuite
metadata: {name: jailbreak}
spec:
  category: safety
  metrics: [{name: refusal_rate, threshold: 1.0}]
  minSamples: 200
  appliesTo: {templates: [support-agent]}
  requiredFor: {steps: [TESTING->CANDIDATE], environments: [prod]}
  onFailure: readonly
"""


def problems(repo: GitRepo, suite: str) -> list[tuple[object, ...]]:
    repo.commit({**BASE, "fleet/suites.yaml": "---\n" + VALID + "---\n" + suite})
    snap = validating.validate(repository.Repository(repo.path), "main", "fleet")
    return [(p.file, p.document, p.line, p.field, p.message) for p in snap.problems]


def suite(spec: str) -> str:
    return f"apiVersion: arm/v1\nkind: EvaluationSuite\nmetadata: {{name: broken}}\nspec:\n{spec}"


def test_a_valid_suite_loads_with_its_defaults(git_repo: GitRepo) -> None:
    git_repo.commit(
        {
            **BASE,
            "fleet/suites.yaml": VALID
            + "---\n"
            + suite(
                "  category: capability\n  metrics: [{name: latency_ms, threshold: 900, direction: lower}]\n  appliesTo: {selector: {labels: {team: support}}}\n"
            ),
        }
    )
    snap = validating.validate(repository.Repository(git_repo.path), "main", "fleet")
    assert snap.problems == [] and snap.warnings == []
    broken = snap.get("EvaluationSuite", "acme", "broken")
    assert broken is not None
    assert broken.doc.facts == {
        "category": "capability",
        "metrics": [{"name": "latency_ms", "threshold": 900.0, "direction": "lower", "significance": False, "unit": "number"}],
        "minSamples": 1,
        "maxRegression": 0.0,
        "appliesTo": {"templates": None, "labels": {"team": "support"}},
        "requiredFor": {"steps": ["TESTING->CANDIDATE"], "environments": []},
        "onFailure": "none",
    }


@pytest.mark.parametrize(
    ("spec", "line", "field", "message"),
    [
        ("  category: security\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {templates: [support-agent]}\n", 17,
         "spec.category", "Input should be 'safety', 'regression' or 'capability' (got 'security')"),
        ("  category: safety\n  metrics: []\n  appliesTo: {templates: [support-agent]}\n", 18, "spec.metrics",
         "a suite needs at least one metric: what a run must report, with its threshold"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}, {name: m, threshold: 0.5}]\n  appliesTo: {templates: [support-agent]}\n",
         18, "spec.metrics", "metric 'm' is declared twice"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1, direction: up}]\n  appliesTo: {templates: [support-agent]}\n",
         18, "spec.metrics[0].direction", "Input should be 'higher' or 'lower' (got 'up')"),
        ("  category: safety\n  metrics: [{name: m, threshold: 2, unit: rate}]\n  appliesTo: {templates: [support-agent]}\n",
         18, "spec.metrics[0]", "metric 'm' is a rate: its threshold must lie between 0 and 1 (got 2.0)"),
        ("  category: safety\n  metrics: [{name: m, threshold: 30, significance: true}]\n  appliesTo: {templates: [support-agent]}\n",
         18, "spec.metrics[0]", "metric 'm': significance needs a rate (a threshold between 0 and 1, or unit: rate)"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {}\n", 19, "spec.appliesTo",
         "name the templates ('templates: [...]') or select them by label ('selector: {labels: {...}}'), one of the two"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  maxRegression: 0.1\n  appliesTo: {templates: [support-agent]}\n",
         19, "spec.maxRegression", "maxRegression is for regression suites; this one is safety (got 0.1)"),
        ("  category: capability\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {templates: [support-agent]}\n  onFailure: pause\n",
         20, "spec.onFailure", "onFailure applies to safety and regression suites; a failing capability run restricts nothing (got 'pause')"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {templates: [support-agent]}\n  onFailure: quarantine\n",
         20, "spec.onFailure", "Input should be 'readonly', 'pause' or 'none' (got 'quarantine')"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {templates: [support-agent]}\n  requiredFor: {steps: [DRAFT->TESTING]}\n",
         20, "spec.requiredFor.steps[0]", "Input should be 'TESTING->CANDIDATE' or 'CANDIDATE->APPROVED' (got 'DRAFT->TESTING')"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  minSamples: 0\n  appliesTo: {templates: [support-agent]}\n",
         19, "spec.minSamples", "Input should be greater than or equal to 1 (got 0)"),
        ("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {templates: [support-agent]}\n  thresholds: 1\n",
         20, "spec.thresholds", "unknown field 'thresholds'"),
    ],
)  # fmt: skip
def test_a_malformed_suite_is_refused_naming_file_document_and_field(
    git_repo: GitRepo, spec: str, line: int, field: str, message: str
) -> None:
    assert problems(git_repo, suite(spec)) == [("fleet/suites.yaml", 1, line, field, message)]


def test_references_to_templates_and_environments_must_exist(git_repo: GitRepo) -> None:
    found = problems(
        git_repo,
        suite("  category: safety\n  metrics: [{name: m, threshold: 1}]\n  appliesTo: {templates: [support-agent, sales-agent]}\n"
              "  requiredFor: {environments: [qa]}\n"),
    )  # fmt: skip
    assert found == [  # at the lines of the fields (the document starts at line 13)
        (
            "fleet/suites.yaml",
            1,
            19,
            "spec.appliesTo.templates[1]",
            "AgentTemplate 'sales-agent' does not exist in tenant 'acme'",
        ),
        ("fleet/suites.yaml", 1, 20, "spec.requiredFor.environments[0]", "Environment 'qa' does not exist in tenant 'acme'"),
    ]


CLAIMED = BASE["fleet/agents/support.yaml"] + "  evaluations:\n    - {suite: qa, score: 0.99, threshold: 0.9, passed: true}\n"


def test_evaluations_stated_in_a_manifest_are_reported_as_ignored(git_repo: GitRepo, tmp_path: object) -> None:
    git_repo.commit({**BASE, "fleet/agents/support.yaml": CLAIMED})
    env = {"ARM_STATE_DIR": f"{tmp_path}/state", "ARM_REPO": str(git_repo.path)}
    text = armctl.invoke(["validate"], env)
    assert text.returncode == 0  # valid: a warning, not a problem
    assert "✓ valid" in text.stdout and "! 1 warning" in text.stdout
    assert (
        "fleet/agents/support.yaml:9, document 1, field spec.evaluations: ignored: a manifest's evaluation results are not evidence"
        in text.stdout
    )
    report = json.loads(armctl.invoke(["validate", "--format", "json"], env).stdout)
    (warning,) = report["warnings"]
    assert (report["valid"], warning["file"], warning["document"], warning["field"]) == (
        True,
        "fleet/agents/support.yaml",
        1,
        "spec.evaluations",
    )
