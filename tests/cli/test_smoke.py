"""``armctl`` as a real process: the console script, its exit codes and its streams.

The other CLI tests run commands in process (``tests/armctl.py``); these few run the installed
entry point the way a user's shell does, so start-up, imports and exit codes are checked end to
end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import GitRepo


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120, check=False,
    )  # fmt: skip


def test_the_sample_fleet_plans_applies_and_reports_as_a_process(sample_repo: GitRepo, tmp_path: Path) -> None:
    env = {"ARM_STATE_DIR": str(tmp_path / "state"), "ARM_REPO": str(sample_repo.path)}
    assert run("init", env=env).returncode == 0
    plan = run("plan", env=env)
    assert plan.returncode == 2, plan.stderr  # Terraform's -detailed-exitcode: there are changes
    applied = run("apply", "--format", "json", env=env)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["outcome"] == "APPLIED"
    assert run("plan", env=env).returncode == 0  # nothing left to do


def test_an_error_is_one_line_on_stderr_exit_1_and_no_traceback(tmp_path: Path) -> None:
    result = run("status", env={"ARM_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("StoreError: the database") and "Traceback" not in result.stderr


def test_usage_errors_exit_1_not_2(tmp_path: Path) -> None:
    result = run("plan", "--format", "yaml", env={"ARM_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 1
    assert "Invalid value for '--format'" in result.stderr
