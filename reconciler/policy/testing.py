"""Running Rego unit tests (``*_test.rego``) the way ``opa test`` does, on either engine.

Every rule named ``test_*`` in a test module is a test: it passes when it evaluates to true, fails
when it is false or undefined, and errors when evaluation fails. ``engine="embedded"`` runs them
on regorus, the engine decisions run on; ``engine="opa"`` on OPA's own Go engine in process
(``policy.goopa``, a tooling dependency), so a rule can be checked to mean the same on both. Used
by ``armctl policy test``, by the pull-request plan, and by the project's own test suite.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping

import regorus

from reconciler import errors
from reconciler.policy import compiling, goopa

__all__ = ["ENGINES", "TestResult", "run_tests"]

#: The engines tests can run on.
ENGINES = ("embedded", "opa")


@dataclasses.dataclass(frozen=True)
class TestResult:
    file: str
    package: str
    name: str
    outcome: str  # PASS | FAIL | ERROR
    message: str = ""
    seconds: float = 0.0


def run_tests(modules: Mapping[str, str], data: Mapping[str, object] | None = None, engine: str = "embedded") -> list[TestResult]:
    """Run every ``test_*`` rule of the ``*_test.rego`` modules in ``modules`` on ``engine``
    (``embedded`` or ``opa``; ConfigError when the OPA engine is not installed)."""
    if engine not in ENGINES:
        raise errors.ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    tests = _tests(modules)
    if isinstance(tests, TestResult):
        return [tests]
    if engine == "opa":
        return _run_on_opa(modules, data, tests)
    return _run_on_regorus(modules, data, tests)


def _tests(modules: Mapping[str, str]) -> list[tuple[str, str, str]] | TestResult:
    """(file, package, test name) of every test, in file order; or the load error."""
    parser = regorus.Engine()
    try:
        for path, text in modules.items():
            parser.add_policy(path, text)
    except RuntimeError as exc:
        file, line, message = compiling.engine_message(exc)
        return TestResult(file or "<rego>", "", "load", "ERROR", f"line {line}: {message}" if line else message)
    found: list[tuple[str, str, str]] = []
    ast = json.loads(parser.get_ast_as_json())
    for module in ast:
        path = module["source"]["file"]
        if not path.endswith("_test.rego"):
            continue
        package = ".".join(compiling.ref_path(module["ast"]["package"]["refr"]))
        names: list[str] = []
        for rule in module["ast"]["rules"]:
            spec = rule.get("Spec")
            if spec is None:
                continue
            ((_, head),) = spec["head"].items()
            name = compiling.ref_path(head["refr"])[0]
            if name.startswith("test_") and name not in names:
                names.append(name)
        found += [(path, package, name) for name in names]
    return found


def _run_on_regorus(
    modules: Mapping[str, str], data: Mapping[str, object] | None, tests: list[tuple[str, str, str]]
) -> list[TestResult]:
    engine = regorus.Engine()
    for path, text in modules.items():
        engine.add_policy(path, text)  # parsed once already: this does not fail
    if data:
        engine.add_data_json(json.dumps(data))
    results: list[TestResult] = []
    for path, package, name in tests:
        started = time.perf_counter()
        try:
            value = engine.eval_rule(f"data.{package}.{name}")
        except RuntimeError as exc:
            _, _, message = compiling.engine_message(exc)
            results.append(TestResult(path, package, name, "ERROR", message, time.perf_counter() - started))
            continue
        results.append(_outcome(path, package, name, value, started))
    return results


def _run_on_opa(
    modules: Mapping[str, str], data: Mapping[str, object] | None, tests: list[tuple[str, str, str]]
) -> list[TestResult]:
    opa = goopa.bindings()
    try:
        engine = goopa.build(modules, data)
    except errors.PolicyError as exc:
        file, _, rest = str(exc).partition(":")
        return [TestResult(file if rest else "<rego>", "", "load", "ERROR", rest.strip() or str(exc))]
    results: list[TestResult] = []
    try:
        for path, package, name in tests:
            started = time.perf_counter()
            try:
                value = engine.eval_document(f"{package}.{name}")
            except opa.OpaUndefinedError:
                value = None
            except opa.OpaError as exc:
                results.append(TestResult(path, package, name, "ERROR", goopa.message(exc), time.perf_counter() - started))
                continue
            results.append(_outcome(path, package, name, value, started))
    finally:
        engine.close()
    return results


def _outcome(path: str, package: str, name: str, value: object, started: float) -> TestResult:
    outcome = "PASS" if value is True else "FAIL"
    message = "" if value is True else ("undefined" if value is None else f"evaluated to {value!r}")
    return TestResult(path, package, name, outcome, message, time.perf_counter() - started)
