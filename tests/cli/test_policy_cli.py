"""``armctl policy test`` runs library and fleet Rego tests and fails on any failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.policy import goopa
from tests import armctl as armctl_
from tests.conftest import PROJECT_ROOT
from tests.realopa import require


def armctl(*args: str, cwd: Path = PROJECT_ROOT) -> armctl_.Result:
    return armctl_.invoke(args, cwd=cwd)


def test_the_library_and_the_sample_fleet_pass() -> None:
    result = armctl("policy", "test", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 0 and report["passed"] >= 30
    files = {r["file"] for r in report["results"]}
    assert "policies/arm/decision_test.rego" in files and "fleet/policies/acme_test.rego" in files


def test_a_failing_fleet_test_exits_1_and_is_named(tmp_path: Path) -> None:
    (tmp_path / "x_test.rego").write_text(
        "package arm.ext.x_test\nimport rego.v1\ntest_ok if { true }\ntest_broken if { 1 == 2 }\n"
    )
    result = armctl("policy", "test", "--path", str(tmp_path))
    assert result.returncode == 1
    assert f"FAIL {tmp_path}/x_test.rego: data.arm.ext.x_test.test_broken: undefined" in result.stdout


def test_a_module_that_does_not_parse_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.rego").write_text("package arm.ext.bad\nimport rego.v1\ndeny contains msg if {\n")
    result = armctl("policy", "test", "--path", str(tmp_path))
    assert result.returncode == 1
    assert "ERROR" in result.stdout and "bad.rego" in result.stdout


def test_the_library_and_the_sample_fleet_pass_on_opas_own_engine() -> None:
    require()
    result = armctl("policy", "test", "--engine", "opa", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["engine"] == "opa" and report["failed"] == 0 and report["passed"] >= 50
    text = armctl("policy", "test", "--engine", "opa")
    assert text.returncode == 0 and "(opa engine)" in text.stdout


def test_a_test_that_only_opa_fails_is_caught_by_running_it_there(tmp_path: Path) -> None:
    require()
    # `not f(input.x)` with x missing: true on regorus, undefined on OPA (opa#1877).
    (tmp_path / "y_test.rego").write_text(
        "package arm.ext.y_test\nimport rego.v1\ntest_missing_is_no_number if { not is_number(input.x) with input as {} }\n"
    )
    assert armctl("policy", "test", "--path", str(tmp_path)).returncode == 0
    on_opa = armctl("policy", "test", "--path", str(tmp_path), "--engine", "opa")
    assert on_opa.returncode == 1
    assert f"FAIL {tmp_path}/y_test.rego: data.arm.ext.y_test.test_missing_is_no_number: undefined" in on_opa.stdout


def test_without_opas_engine_installed_the_cli_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stands in for a machine without the wheel, where the module cannot be imported: the only
    # patch here, since this machine (and CI) has the engine installed and cannot lack it.
    monkeypatch.setattr(goopa, "_MODULE", [None])
    result = armctl("policy", "test", "--engine", "opa", "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "ConfigError"
    assert "scripts/install-opa-engine" in json.loads(result.stdout)["message"]
    text = armctl("policy", "test", "--engine", "opa")
    assert text.returncode == 1 and text.stderr.startswith("ConfigError: the real OPA engine is not installed")
