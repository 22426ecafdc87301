"""``armctl policy test`` runs library and fleet Rego tests and fails on any failure."""

from __future__ import annotations

import json
from pathlib import Path

from tests import armctl as armctl_
from tests.conftest import PROJECT_ROOT


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
