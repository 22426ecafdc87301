"""``armctl validate`` and ``armctl schema`` as a user runs them: a real process, real repos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import armctl as armctl_
from tests.conftest import GitRepo
from tests.desired.fleetdocs import BASE


def armctl(*args: str, cwd: Path | None = None, state: Path | None = None) -> armctl_.Result:
    options = ["--state-dir", str(state)] if state is not None else []
    return armctl_.invoke([*options, *args], cwd=cwd)


def test_the_sample_fleet_validates(sample_repo: GitRepo, tmp_path: Path) -> None:
    result = armctl("validate", "--repo", str(sample_repo.path), "--ref", "main", state=tmp_path / "state")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ valid" in result.stdout
    assert "1 Tenant, 2 Project, 3 Environment" in result.stdout


def test_json_output_lists_counts_and_commit(git_repo: GitRepo, tmp_path: Path) -> None:
    sha = git_repo.commit(BASE, author="Grace Hopper <grace@example.com>")
    result = armctl("validate", "--repo", str(git_repo.path), "--format", "json", state=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["commit"]["sha"] == sha and report["commit"]["author"] == "Grace Hopper <grace@example.com>"
    assert report["revision"] == f"HEAD@sha1:{sha}"
    assert report["counts"]["AgentVersion"] == 1 and report["problems"] == []


def test_an_invalid_commit_exits_1_and_lists_every_problem(git_repo: GitRepo, tmp_path: Path) -> None:
    git_repo.commit(
        {
            **BASE,
            "fleet/deploy.yaml": BASE["fleet/deploy.yaml"].replace("environment: prod", "environment: qa"),
            "fleet/typo.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: x}\nspce: {}\n",
        }
    )
    result = armctl("validate", "--repo", str(git_repo.path), state=tmp_path / "s")
    assert result.returncode == 1
    assert "✗ 2 problems" in result.stdout
    line = next(n for n, row in enumerate(BASE["fleet/deploy.yaml"].splitlines(), 1) if "environment: prod" in row)
    assert f"fleet/deploy.yaml:{line}, document 0, field spec.environment: Environment 'qa' does not exist" in result.stdout
    assert "fleet/typo.yaml:4, document 0, field spce: unknown field 'spce'" in result.stdout
    as_json = json.loads(armctl("validate", "--repo", str(git_repo.path), "--format", "json", state=tmp_path / "s").stdout)
    assert as_json["valid"] is False
    assert {(p["file"], p["field"]) for p in as_json["problems"]} == {
        ("fleet/deploy.yaml", "spec.environment"),
        ("fleet/typo.yaml", "spce"),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ref", "no-such-branch"], "SourceError: ref 'no-such-branch' not found in"),
        (["--path", "missing"], "SourceError: path 'missing' does not exist in commit"),
    ],
)
def test_source_errors_are_one_line_without_traceback(git_repo: GitRepo, tmp_path: Path, args: list[str], message: str) -> None:
    git_repo.commit(BASE)
    result = armctl("validate", "--repo", str(git_repo.path), *args, state=tmp_path / "s")
    assert result.returncode == 1
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr


def test_a_directory_that_is_not_a_repository_is_a_source_error(tmp_path: Path) -> None:
    result = armctl("validate", "--repo", str(tmp_path), state=tmp_path / "s")
    assert result.returncode == 1
    assert result.stderr.strip() == f"SourceError: {tmp_path} is not a Git repository"


def test_usage_errors_exit_1(tmp_path: Path) -> None:
    result = armctl("validate", "--format", "yaml", state=tmp_path / "s")
    assert result.returncode == 1
    assert "Invalid value for '--format'" in result.stderr


def test_schema_prints_json_schema_for_every_kind_and_for_one(tmp_path: Path) -> None:
    whole = json.loads(armctl("schema").stdout)
    kinds = {ref.rsplit("/", 1)[-1] for ref in whole["discriminator"]["mapping"].values()}
    assert kinds == {
        "Tenant",
        "Project",
        "Environment",
        "Operator",
        "Role",
        "ToolCatalog",
        "AgentTemplate",
        "EvaluationSuite",
        "NotificationChannel",
        "AgentVersion",
        "PolicyEnvelope",
        "Deployment",
    }
    one = json.loads(armctl("schema", "--kind", "Deployment").stdout)
    assert one["title"] == "Deployment"
    assert one["additionalProperties"] is False
    assert set(one["required"]) == {"apiVersion", "kind", "metadata", "spec"}
