"""The Rego unit tests of the built-in library and of the sample fleet all pass."""

from __future__ import annotations

from reconciler.policy import library, testing
from tests.conftest import SAMPLE_FLEET


def _fleet_modules() -> dict[str, str]:
    return {f"fleet/{p.relative_to(SAMPLE_FLEET).as_posix()}": p.read_text() for p in SAMPLE_FLEET.rglob("*.rego")}


def test_every_library_and_sample_fleet_rego_test_passes() -> None:
    results = testing.run_tests(library.modules_for(_fleet_modules()))
    failed = [r for r in results if r.outcome != "PASS"]
    assert failed == []
    files = {r.file for r in results}
    assert {"policies/arm/gates_test.rego", "fleet/policies/acme_test.rego"} <= files
    assert len(results) >= 20


def test_a_failing_and_an_erroring_rego_test_are_reported() -> None:
    modules = {
        "x.rego": "package x\nimport rego.v1\nanswer := 41\n",
        "x_test.rego": (
            "package x_test\nimport rego.v1\nimport data.x\n"
            "test_answer if { x.answer == 42 }\n"
            "test_ok if { x.answer == 41 }\n"
            "test_boom if { 1 / 0 == 1 }\n"
        ),
    }
    results = {r.name: r for r in testing.run_tests(modules)}
    assert results["test_ok"].outcome == "PASS"
    assert (results["test_answer"].outcome, results["test_answer"].message) == ("FAIL", "undefined")
    assert results["test_boom"].outcome in ("FAIL", "ERROR")
