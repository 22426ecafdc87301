"""Policy engines behind one interface: load a revision's modules and data, evaluate rules.

:class:`EmbeddedEngine` runs regorus in process (~36 µs a decision on a 2-core host, see docs/architecture.md). A regorus engine
belongs to the thread that made it — calling it from another thread raises pyo3's
``PanicException``, a ``BaseException``, and dropping it on another thread is an error too — so
each thread builds its own from the current :class:`Bundle` and keeps it in a thread-local of
this module, which each thread clears itself. ``load`` swaps the bundle in one assignment: a
thread picks the new revision up on its next evaluation and never sees a half-loaded one. Other
engines (OPA over HTTP, ``policy.opa``) implement the same :class:`Engine` protocol.

``query`` answers as OPA's Data API does, for the server's ``/v1/data`` routes: a path of URL
segments (none: the whole data document; a segment of digits is a number, as OPA reads it), an
input or none at all, and ``{"result": value}`` or ``{}`` when the document is undefined.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson
import regorus

from reconciler import errors
from reconciler.policy import compiling

__all__ = ["Bundle", "EmbeddedEngine", "Engine", "built_here", "data_ref", "jsonable"]


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

    def query(self, path: Sequence[str], input: Any | None) -> dict[str, Any]:
        """OPA's Data API answer for the document at ``path`` under ``data`` (a rule, a package,
        data; no segments: all of it) with ``input`` (None: no input, as OPA takes a missing or
        null one): ``{"result": value}``, or ``{}`` when the document is undefined."""


#: Per thread, the regorus engines it built: {EmbeddedEngine key: (weak ref to it, bundle, engine,
#: pristine)}; ``pristine`` is never given an input (regorus cannot take one back): it answers
#: queries made without one.
#: Kept here, not in a thread-local of each EmbeddedEngine: collecting one of those drops every
#: thread's engine on whichever thread collects it. Here a thread drops its own engines: those of
#: collected EmbeddedEngines when it next builds one, and the rest when it ends.
_THREAD = threading.local()
_KEYS = itertools.count()


def built_here() -> list[regorus.Engine]:
    """The regorus engines this thread holds (for tests)."""
    return [engine for _, _, engine, _ in getattr(_THREAD, "engines", {}).values()]


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

    def _engine(self, pristine: bool = False) -> regorus.Engine:
        bundle = self._bundle
        if bundle is None:
            raise errors.PolicyError("no policy is loaded yet")
        try:
            built = _THREAD.engines
        except AttributeError:
            built = _THREAD.engines = {}
        entry = built.get(self._key)
        if entry is None or entry[1] is not bundle:
            for key in [key for key, (owner, _, _, _) in built.items() if owner() is None]:
                del built[key]  # an EmbeddedEngine that is gone: its engine is dropped here, where it was built
            fresh = _build(bundle)
            # A clone shares what was loaded with the engine it was made from (it costs ~0.5 µs).
            entry = built[self._key] = (weakref.ref(self), bundle, fresh.clone(), fresh)
        return entry[3] if pristine else entry[2]

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        return self._run("eval_rule", rule, input)

    def query(self, path: Sequence[str], input: Any | None) -> dict[str, Any]:
        # As JSON text, which writes sets as arrays and a key that is not a string as its JSON
        # text, as OPA does (the Python values regorus gives cannot hold an array as a key).
        text = self._run("eval_query_as_json", data_ref(path), input)
        rows = _loads(text).get("result") or []
        if not rows or not rows[0].get("expressions"):
            return {}
        return {"result": rows[0]["expressions"][0].get("value")}

    def _run(self, method: str, what: str, input: Any | None) -> Any:
        """``method`` (``eval_rule``, ``eval_query``) of this thread's engine on ``what``."""
        engine = self._engine(pristine=input is None)
        try:
            if input is not None:
                engine.set_input_json(orjson.dumps(input, option=orjson.OPT_NON_STR_KEYS).decode())
            return getattr(engine, method)(what)
        except RuntimeError as exc:
            # The error's traceback keeps this frame, and outlives the thread it was raised on
            # when that thread ends first: the engine is let go here, where it was built.
            del engine
            _, _, message = compiling.engine_message(exc)
            raise errors.PolicyError(f"evaluating {what}: {message}") from exc
        except BaseException as exc:
            del engine
            # pyo3's PanicException derives from BaseException; anything else is re-raised.
            if type(exc).__name__ != "PanicException":
                raise
            raise errors.PolicyError(f"evaluating {what}: the policy engine panicked: {exc}") from exc


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # an integer past 64 bits, which orjson does not read
        return json.loads(text)


def data_ref(path: Sequence[str]) -> str:
    """The Rego reference OPA's Data API reads for URL path segments: ``["arm", "ext", "a-b"]`` is
    ``data["arm"]["ext"]["a-b"]``; empty segments are skipped and one of digits is a number."""
    keys = [str(int(part)) if _INTEGER.fullmatch(part) else json.dumps(part) for part in path if part]
    return "data" + "".join(f"[{key}]" for key in keys)


_INTEGER = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi takes, as OPA's server parses a path


def jsonable(value: Any) -> Any:
    """``value`` as JSON has it: regorus gives sets as Python sets, OPA as sorted arrays."""
    if isinstance(value, set):
        return sorted((jsonable(v) for v in value), key=_order)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def _order(value: Any) -> tuple[int, Any]:
    # Rego's order: null, booleans, numbers, strings, then composites (here by their JSON).
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    return (4 if isinstance(value, list) else 5, json.dumps(value, sort_keys=True))


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
