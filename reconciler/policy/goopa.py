"""OPA's own Rego engine, in process: the reference every other engine is held to.

PyPI ``opa-golib-python-bindings`` carries OPA v1.20's Go engine as a shared library behind
ctypes, so the real OPA answers without an ``opa`` binary or a server. It is a test and tooling
dependency, not a runtime one: the decision service runs on the embedded engine
(``policy.engines``) or a real OPA server (``policy.opa``); this module serves the shared
decision table, the differential tests, ``armctl policy test --engine opa`` (``policy.testing``)
and the OPA-protocol test server. Its wheel asks for Python ≥ 3.14 but works on 3.11:
``scripts/install-opa-engine`` installs the pinned release.

:class:`GoOpaEngine` implements ``engines.Engine``. One engine per revision, built whole before it
is swapped in (a failed load keeps the old one); the library serialises evaluations itself, so
threads share it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from reconciler import errors
from reconciler.policy import engines

__all__ = ["INSTALL_HINT", "GoOpaEngine", "available", "bindings"]

#: What to do where the engine is missing.
INSTALL_HINT = (
    "the real OPA engine is not installed: run scripts/install-opa-engine"
    " (PyPI opa-golib-python-bindings==0.4.4, which asks for Python >= 3.14 but works on 3.11)"
)

_LOCK = threading.Lock()
_MODULE: list[ModuleType | None] = []


def bindings() -> ModuleType:
    """The ``opa_bindings`` module; ConfigError saying how to install it when it is missing."""
    with _LOCK:
        if not _MODULE:
            try:
                _MODULE.append(importlib.import_module("opa_bindings"))
            except ImportError:  # the wheel is absent, or its shared library does not load here
                _MODULE.append(None)
    module = _MODULE[0]
    if module is None:
        raise errors.ConfigError(INSTALL_HINT)
    return module


def available() -> bool:
    try:
        bindings()
    except errors.ConfigError:
        return False
    return True


def build(modules: Mapping[str, str], data: Mapping[str, Any] | None = None) -> Any:
    """A compiled OPA engine holding ``modules`` and ``data``; PolicyError naming the file and
    line OPA refuses (a parse error, an unknown function, a type error)."""
    opa = bindings()
    engine = opa.OpaEngine()
    try:
        for path, text in modules.items():
            engine.add_policy(path, text)
        if data:
            engine.add_data(dict(data))
        engine.eval_query("__compiled__ := true")  # compiles every module now, not at the first decision
    except opa.OpaError as exc:
        engine.close()
        raise errors.PolicyError(message(exc)) from exc
    return engine


def message(exc: BaseException) -> str:
    """An OPA error without its code prefix or the wrapping of a bundle activation."""
    text = str(getattr(exc, "message", exc))
    for prefix in ("bundle activation failed: ", "1 error occurred: "):
        text = text.removeprefix(prefix)
    return text.strip()


class GoOpaEngine:
    def __init__(self) -> None:
        bindings()  # fail now, naming what to install, rather than at the first load
        self._bundle: engines.Bundle | None = None
        self._engine: Any = None

    @property
    def revision(self) -> str | None:
        return None if self._bundle is None else self._bundle.revision

    def load(self, bundle: engines.Bundle) -> None:
        try:
            engine = build(bundle.modules, bundle.data)
        except errors.PolicyError as exc:
            raise errors.PolicyError(f"policy revision {bundle.revision} does not load: {exc}") from exc
        self._engine, self._bundle = engine, bundle

    def _loaded(self) -> Any:
        if self._engine is None:
            raise errors.PolicyError("no policy is loaded yet")
        return self._engine

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        if rule != "data" and not rule.startswith("data."):
            raise errors.PolicyError(f"rule {rule!r} must start with data.")
        opa, engine = bindings(), self._loaded()
        try:
            return engine.eval_document(rule.removeprefix("data").removeprefix("."), input)
        except opa.OpaUndefinedError:
            return None
        except opa.OpaError as exc:
            raise errors.PolicyError(f"evaluating {rule}: {message(exc)}") from exc

    def query(self, path: Sequence[str], input: Any | None) -> dict[str, Any]:
        opa, engine = bindings(), self._loaded()
        ref = engines.data_ref(path)
        try:
            rows = engine.eval_query(f"__result__ := {ref}", input)
        except opa.OpaError as exc:
            raise errors.PolicyError(f"evaluating {ref}: {message(exc)}") from exc
        return {"result": rows[0]["__result__"]} if rows else {}
