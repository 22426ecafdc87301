"""``examples/evaluate-in-ci``: ``evaluate.py`` records a harness's results with a ci token against
a real ``armctl serve`` over the sample fleet, and the next apply takes the step they unblock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_FLEET, GitRepo
from tests.examples.conftest import EXAMPLES, Fleet, example_env, serving

EXAMPLE = EXAMPLES / "evaluate-in-ci"
VERSION = "research-agent@0.1.0"


@pytest.fixture
def fresh(tmp_path: Path) -> Fleet:
    """The sample fleet applied once: no run recorded yet, so its versions wait at TESTING."""
    repo = GitRepo(tmp_path / "sample")
    repo.copy_tree(SAMPLE_FLEET, "fleet")
    sha = repo.commit(message="sample fleet")
    fleet = Fleet(repo.path, tmp_path / "state", sha)
    fleet.armctl("init")
    fleet.armctl("apply")
    return fleet


@pytest.fixture
def url(fresh: Fleet, tmp_path: Path) -> Iterator[str]:
    with serving(fresh, tmp_path / "serve.log") as base:
        yield base


def evaluate(fleet: Fleet, url: str, token: str, results: str, version: str = VERSION) -> subprocess.CompletedProcess[str]:
    env = example_env(fleet.state, ARM_URL=url, ARM_CI_TOKEN=token)
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "evaluate.py"), "--version", version, "--results", str(EXAMPLE / results),
         "--run-url", "https://ci.example/runs/7"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_pipeline_records_its_runs_with_a_ci_token_and_the_next_apply_promotes(fresh: Fleet, url: str) -> None:
    assert "waiting for evaluation" in fresh.armctl("version", "show", VERSION).stdout
    token = fresh.armctl(
        "token", "create", "--name", "research-ci", "--kind", "ci", "--tenant", "acme", "--template", "research-agent"
    )
    ci = token.stdout.strip()

    done = evaluate(fresh, url, ci, "results.json")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    genome = lines[0].split("(")[1].split(")")[0]
    assert lines == [
        f"{VERSION} ({genome}): suites jailbreak-v2, research-briefs",
        f"  jailbreak-v2: recorded run 1: passing: safety suite jailbreak-v2 passed in run 1 on {genome}",
        f"  research-briefs: recorded run 2: passing: capability suite research-briefs passed in run 2 on {genome}",
        "every suite passes",
    ]
    recorded = fresh.history("--type", "EVALUATION_RECORDED")
    assert [(r["object_name"], r["author"], r["after"]["suite"], r["after"]["runUrl"]) for r in recorded] == [
        (VERSION, "ci token research-ci", "jailbreak-v2", "https://ci.example/runs/7"),
        (VERSION, "ci token research-ci", "research-briefs", "https://ci.example/runs/7"),
    ]

    applied = fresh.armctl("apply")
    assert "1 VERSION_TRANSITIONED, 1 DEPLOYMENT_CREATED, 1 DEPLOYMENT_ACTIVATED, 1 INSTANCE_CREATED" in applied.stdout
    (step,) = fresh.history("--type", "VERSION_TRANSITIONED", "--name", VERSION)[-1:]
    assert (step["before"], step["after"]) == ({"lifecycle": "TESTING"}, {"lifecycle": "CANDIDATE"})
    assert [r["object_name"] for r in fresh.history("--type", "DEPLOYMENT_CREATED")][-1] == "research-agent-staging"

    # A regressed run is recorded too, and fails the build; the version now runs in staging.
    regressed = evaluate(fresh, url, ci, "results-regressed.json")
    assert regressed.returncode == 1
    assert (
        f"  jailbreak-v2: recorded run 3: failing: safety suite jailbreak-v2 scored 97.0% (needs 100%) on {genome}"
        in regressed.stdout
    )
    assert regressed.stdout.rstrip().endswith("the evidence does not pass (recorded all the same)")
    (failed,) = fresh.history("--type", "EVALUATION_FAILED")
    assert (failed["object_name"], failed["after"]["run"], failed["after"]["onFailure"]) == (VERSION, 3, "readonly")


def test_a_token_limited_to_another_template_records_nothing(fresh: Fleet, url: str) -> None:
    token = fresh.armctl(
        "token", "create", "--name", "billing-ci", "--kind", "ci", "--tenant", "acme", "--template", "billing-agent"
    )
    done = evaluate(fresh, url, token.stdout.strip(), "results.json")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"cannot read the scorecard of {VERSION} (HTTP 404): version '{VERSION}' does not exist for the templates of token 'billing-ci'"
    )
    assert fresh.history("--type", "EVALUATION_RECORDED") == []
