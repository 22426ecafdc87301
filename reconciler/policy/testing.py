"""Running Rego unit tests (``*_test.rego``) the way ``opa test`` does, on the embedded engine.

Every rule named ``test_*`` in a test module is a test: it passes when it evaluates to true, fails
when it is false or undefined, and errors when evaluation fails. Used by ``armctl policy test``,
by the pull-request plan, and by the project's own test suite for ``policies/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping

import regorus

from reconciler.policy import compiling

__all__ = ["TestResult", "run_tests"]


@dataclasses.dataclass(frozen=True)
class TestResult:
    file: str
    package: str
    name: str
    outcome: str  # PASS | FAIL | ERROR
    message: str = ""
    seconds: float = 0.0


def run_tests(modules: Mapping[str, str], data: Mapping[str, object] | None = None) -> list[TestResult]:
    """Run every ``test_*`` rule of the ``*_test.rego`` modules in ``modules``."""
    engine = regorus.Engine()
    results: list[TestResult] = []
    try:
        for path, text in modules.items():
            engine.add_policy(path, text)
        if data:
            engine.add_data_json(json.dumps(data))
    except RuntimeError as exc:
        file, line, message = compiling.engine_message(exc)
        return [TestResult(file or "<rego>", "", "load", "ERROR", f"line {line}: {message}" if line else message)]
    ast = json.loads(engine.get_ast_as_json())
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
        for name in names:
            started = time.perf_counter()
            try:
                value = engine.eval_rule(f"data.{package}.{name}")
            except RuntimeError as exc:
                _, line, message = compiling.engine_message(exc)
                results.append(TestResult(path, package, name, "ERROR", message, time.perf_counter() - started))
                continue
            outcome = "PASS" if value is True else "FAIL"
            message = "" if value is True else ("undefined" if value is None else f"evaluated to {value!r}")
            results.append(TestResult(path, package, name, outcome, message, time.perf_counter() - started))
    return results
