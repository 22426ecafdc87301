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


def test_the_fleets_packages_are_named_in_the_extension_index() -> None:
    declared = {
        "a.rego": "package arm.ext.acme\n",
        "b.rego": 'package arm.ext["billing-desk"]  # quoted\n',
        "c.rego": 'package arm.ext["with.dot"]\n',  # one segment, dots and all
        "d.rego": "package arm.ext.acme.nested\n",  # not directly under arm.ext: never asked
        "e.rego": "package arm.extacme\n",
        "f.rego": "# package arm.ext.commented\npackage arm.decision_helpers\n",
        "g.rego": "package\n  arm.ext.split\n",  # the path may follow on the next line
        "h.rego": "package\r\narm.ext.crlf\r\n",
        "i.rego": "package arm.ext.raw\nx := `\npackage arm.ext.inside\n`\n",  # a string, not a declaration
    }
    assert library.extension_packages(declared) == ["acme", "billing-desk", "crlf", "raw", "split", "with.dot"]
    # A module that does not parse keeps the general form (the compile check reports it).
    assert library.extension_packages({"x.rego": "import rego.v1\n"}) is None
    general = library.builtin_modules()[library.EXTENSIONS]
    assert "data.arm.ext[_].deny" in general
    named = library.modules_for(_fleet_modules(), tests=False)[library.EXTENSIONS]
    assert 'data.arm.ext["acme"].deny' in named and "data.arm.ext[_]" not in named
    broken = library.modules_for({"broken.rego": "package arm.ext.broken\nimport rego.v1\ndeny contains if\n"})
    assert broken[library.EXTENSIONS] == general


def test_a_fleet_package_declared_across_lines_still_denies() -> None:
    from reconciler.policy import engines
    from tests.policy.decision_cases import make_input

    fleet = {"fleet/split.rego": 'package\n  arm.ext.split\n\nimport rego.v1\n\ndeny contains "split says no" if true\n'}
    engine = engines.EmbeddedEngine()
    engine.load(engines.Bundle(library.modules_for(fleet, tests=False), {}, "split"))
    result = engine.evaluate("data.arm.decision.result", make_input())
    assert result == {"decision": "DENY", "reasons": ["split says no"]}


def test_the_named_and_the_general_extension_index_give_the_same_decisions() -> None:
    from reconciler.policy import engines
    from tests.policy.decision_cases import CASES, make_input

    fleet = _fleet_modules()
    named = engines.EmbeddedEngine()
    named.load(engines.Bundle(library.modules_for(fleet, tests=False), {}, "named"))
    general = engines.EmbeddedEngine()
    raw = {p: t for p, t in {**library.builtin_modules(), **fleet}.items() if not p.endswith("_test.rego")}
    general.load(engines.Bundle(raw, {}, "general"))
    documents = [document for _, document in CASES]
    for tool, args, production in [
        ("payments.refund", {"amount": 50}, False),
        ("payments.refund", {"amount": 250}, False),
        ("payments.refund", {"amount": 900}, False),
        ("payments.refund", {"amount": "lots"}, False),
        ("email.send", {"to": ["a@acme.example"], "cc": ["x@elsewhere.example"]}, False),
        ("email.send", {"to": ["x@elsewhere.example"]}, True),
        ("k8s.scale-deployment", {"replicas": 0}, True),
        ("shell.exec", {}, True),
    ]:
        document = make_input(tool=tool, risk="RED" if production else "GREEN")
        documents.append(
            {**document, "args": args, "environment": {"name": "prod" if production else "dev", "production": production}}
        )
    results = [named.evaluate("data.arm.decision.result", d) for d in documents]
    assert results == [general.evaluate("data.arm.decision.result", d) for d in documents]
    # The fleet's rules did speak: its reasons are in the answers.
    assert any("refunds above 500" in r for result in results for r in result["reasons"])
    assert any("RED tool in production" in r for result in results for r in result["reasons"])
