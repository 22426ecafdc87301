"""Policy engines behind one interface: load a revision's modules and data, evaluate rules.

:class:`EmbeddedEngine` runs regorus in process (NOTES.md: ~36 µs a decision). A regorus engine
belongs to the thread that made it — calling it from another thread raises pyo3's
``PanicException``, a ``BaseException`` — so each thread builds its own from the current
:class:`Bundle`. ``load`` swaps the bundle in one assignment: a thread picks the new revision up
on its next evaluation and never sees a half-loaded one. Other engines (OPA over HTTP) implement
the same :class:`Engine` protocol.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
import regorus

from reconciler import errors
from reconciler.policy import compiling

__all__ = ["Bundle", "EmbeddedEngine", "Engine"]


@dataclasses.dataclass(frozen=True)
class Bundle:
    """Everything an engine evaluates against: Rego modules, data and the revision they are."""

    modules: Mapping[str, str]
    data: Mapping[str, Any]
    revision: str


class Engine(Protocol):
    @property
    def revision(self) -> str | None: ...

    def load(self, bundle: Bundle) -> None:
        """Make ``bundle`` the policy in force; raises PolicyError and keeps the old one on failure."""

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        """The value of ``rule`` (``data.arm.gates.results``) for ``input``; None when undefined."""

    def query(self, path: str, input: Mapping[str, Any]) -> Any:
        """The value of any document under ``data`` (a rule, a package, data), as OPA's Data API
        gives it; None when undefined or when the path names nothing."""


class EmbeddedEngine:
    def __init__(self) -> None:
        self._bundle: Bundle | None = None
        self._local = threading.local()

    @property
    def revision(self) -> str | None:
        return None if self._bundle is None else self._bundle.revision

    def load(self, bundle: Bundle) -> None:
        _build(bundle)  # fails here, on the caller's thread, before anything is swapped
        self._bundle = bundle

    def _engine(self) -> regorus.Engine:
        bundle = self._bundle
        if bundle is None:
            raise errors.PolicyError("no policy is loaded yet")
        local = self._local
        if getattr(local, "bundle", None) is not bundle:
            local.engine = _build(bundle)
            local.bundle = bundle
        return local.engine

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        return self._run(rule, input, lambda engine: engine.eval_rule(rule))

    def query(self, path: str, input: Mapping[str, Any]) -> Any:
        result = self._run(path, input, lambda engine: engine.eval_query(path))
        rows = result.get("result") or []
        if not rows or not rows[0].get("expressions"):
            return None
        return rows[0]["expressions"][0].get("value")

    def _run(self, what: str, input: Mapping[str, Any], call: Callable[[regorus.Engine], Any]) -> Any:
        engine = self._engine()
        try:
            engine.set_input_json(orjson.dumps(input, option=orjson.OPT_NON_STR_KEYS).decode())
            return call(engine)
        except RuntimeError as exc:
            _, _, message = compiling.engine_message(exc)
            raise errors.PolicyError(f"evaluating {what}: {message}") from exc
        except BaseException as exc:
            # pyo3's PanicException derives from BaseException; anything else is re-raised.
            if type(exc).__name__ != "PanicException":
                raise
            raise errors.PolicyError(f"evaluating {what}: the policy engine panicked: {exc}") from exc


def _build(bundle: Bundle) -> regorus.Engine:
    engine = regorus.Engine()
    try:
        for path, text in bundle.modules.items():
            engine.add_policy(path, text)
        engine.add_data_json(orjson.dumps(bundle.data, option=orjson.OPT_NON_STR_KEYS).decode())
    except RuntimeError as exc:
        file, line, message = compiling.engine_message(exc)
        where = f"{file}:{line}: " if file else ""
        raise errors.PolicyError(f"policy revision {bundle.revision} does not load: {where}{message}") from exc
    return engine
