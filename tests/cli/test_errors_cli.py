"""Errors a user can act on: git's own reason, a state directory that cannot be made, a JSON
error object under ``--format json``, and a reference problem at its field's line."""

from __future__ import annotations

from pathlib import Path

from tests.armctl import invoke
from tests.conftest import GitRepo
from tests.reconcile import scenario


def test_a_failed_clone_says_gits_reason(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere.git").as_uri()
    result = invoke(["--state-dir", str(tmp_path / "state"), "validate", "--repo", missing])
    assert result.returncode == 1
    assert f"SourceError: cannot clone {missing}: fatal: " in result.stderr
    assert "does not appear to be a git repository" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_state_directory_that_cannot_be_made_is_a_clear_error_in_text_and_json(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    state = tmp_path / "file" / "state"
    text = invoke(["--state-dir", str(state), "status"], env={"ARM_DATABASE_URL": ""})
    assert text.returncode == 1
    assert text.stderr.startswith(f"ConfigError: cannot create the directory {state} of the SQLite database: Not a directory")
    assert "Traceback" not in text.stderr
    as_json = invoke(["--state-dir", str(state), "status", "--format", "json"], env={"ARM_DATABASE_URL": ""})
    assert as_json.returncode == 1
    error = as_json.json()
    assert error["error"] == "ConfigError"
    assert error["message"].startswith(f"cannot create the directory {state}")
    usage = invoke(["status", "--format=json", "--no-such-option"])
    assert (usage.returncode, usage.json()["error"]) == (1, "NoSuchOption")


def test_a_broken_reference_is_reported_at_its_fields_line_also_as_a_json_error(git_repo: GitRepo, tmp_path: Path) -> None:
    files = scenario.first_commit_files()
    files["fleet/deploy-dev.yaml"] = "# dev\n" + scenario.deployment("app-dev", "dev", "1.0.0", 1).replace(
        "spec: {template: app, environment: dev, version: app@1.0.0, replicas: 1}",
        "spec:\n  template: app\n  replicas: 1\n  environment: qa\n  version: app@1.0.0\n",
    )
    git_repo.commit(files)
    env = {"ARM_STATE_DIR": str(tmp_path / "state"), "ARM_REPO": str(git_repo.path), "ARM_DATABASE_URL": ""}
    text = invoke(["validate"], env=env)
    assert text.returncode == 1
    # line 8 holds the field; the document starts at line 2
    assert "fleet/deploy-dev.yaml:8, document 0, field spec.environment: Environment 'qa' does not exist" in text.stdout
    assert invoke(["init"], env=env).returncode == 0
    plan = invoke(["plan", "--format", "json"], env=env)
    assert plan.returncode == 1
    error = plan.json()
    assert error["error"] == "ValidationFailed"
    assert {"file": "fleet/deploy-dev.yaml", "document": 0, "line": 8, "field": "spec.environment",
            "message": "Environment 'qa' does not exist in tenant 'acme'"} in error["problems"]  # fmt: skip
