"""Policy engines behind one interface: load a revision's modules and data, evaluate rules.

:class:`EmbeddedEngine` runs regorus in process (NOTES.md: ~36 µs a decision). A regorus engine
belongs to the thread that made it — calling it from another thread raises pyo3's
``PanicException``, a ``BaseException``, and dropping it on another thread is an error too — so
each thread builds its own from the current :class:`Bundle` and keeps it in a thread-local of
this module, which each thread clears itself. ``load`` swaps the bundle in one assignment: a
thread picks the new revision up on its next evaluation and never sees a half-loaded one. Other
engines (OPA over HTTP) implement the same :class:`Engine` protocol.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
import regorus

from reconciler import errors
from reconciler.policy import compiling

__all__ = ["Bundle", "EmbeddedEngine", "Engine", "built_here"]


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


#: Per thread, the regorus engines it built: {EmbeddedEngine key: (weak ref to it, bundle, engine)}.
#: Kept here, not in a thread-local of each EmbeddedEngine: collecting one of those drops every
#: thread's engine on whichever thread collects it. Here a thread drops its own engines: those of
#: collected EmbeddedEngines when it next builds one, and the rest when it ends.
_THREAD = threading.local()
_KEYS = itertools.count()


def built_here() -> list[regorus.Engine]:
    """The regorus engines this thread holds (for tests)."""
    return [engine for _, _, engine in getattr(_THREAD, "engines", {}).values()]


class EmbeddedEngine:
    def __init__(self) -> None:
        self._bundle: Bundle | None = None
        self._key = next(_KEYS)

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
        try:
            built = _THREAD.engines
        except AttributeError:
            built = _THREAD.engines = {}
        entry = built.get(self._key)
        if entry is None or entry[1] is not bundle:
            for key in [key for key, (owner, _, _) in built.items() if owner() is None]:
                del built[key]  # an EmbeddedEngine that is gone: its engine is dropped here, where it was built
            entry = built[self._key] = (weakref.ref(self), bundle, _build(bundle))
        return entry[2]

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
        # The error's traceback keeps this frame, and the error may be dropped on another thread:
        # the half-built engine goes now, on the thread that built it.
        del engine
        file, line, message = compiling.engine_message(exc)
        where = f"{file}:{line}: " if file else ""
        raise errors.PolicyError(f"policy revision {bundle.revision} does not load: {where}{message}") from exc
    return engine
