"""The scenarios in ``examples/`` run as their READMEs say."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import GitRepo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PR_PLAN = PROJECT_ROOT / "examples" / "pr-plan" / "pr-plan.sh"


def run_pr_plan(repo: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "ARM_STATE_DIR": str(state)}
    return subprocess.run([str(PR_PLAN), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_pull_request_plan_comment(git_repo: GitRepo, tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "fleet", git_repo.path / "fleet")
    git_repo.git("add", "-A")
    git_repo.git("commit", "-qm", "the sample fleet")
    envelopes = git_repo.path / "fleet" / "envelopes.yaml"
    envelopes.write_text(envelopes.read_text().replace("escalateAfterSeconds: 1800", "escalateAfterSeconds: 900"))
    git_repo.git("commit", "-qam", "escalate refunds sooner")

    ok = run_pr_plan(git_repo.path, tmp_path / "state", "HEAD~1", "HEAD", str(tmp_path / "plan.md"))
    assert ok.returncode == 0, ok.stderr
    comment = (tmp_path / "plan.md").read_text()
    assert "**1 change**" in comment and "| ~ | PolicyEnvelope | `revenue-ops-guardrails` | `POLICY_UPDATED` |" in comment
    assert "#### Rego unit tests" in comment and "passed." in comment

    (git_repo.path / "fleet" / "broken.yaml").write_text(
        "apiVersion: arm/v1\nkind: AgentTemplate\nmetadata: {name: x}\nspec: {bogus: 1}\n"
    )
    git_repo.git("add", "-A")
    git_repo.git("commit", "-qm", "an invalid manifest")
    bad = run_pr_plan(git_repo.path, tmp_path / "state", "HEAD~1", "HEAD", str(tmp_path / "plan.md"))
    assert bad.returncode == 1
    failed = (tmp_path / "plan.md").read_text()
    assert "### ARM plan failed" in failed and "fleet/broken.yaml" in failed
