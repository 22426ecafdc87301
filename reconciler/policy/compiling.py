"""Compile checks for Rego modules: the built-in library plus a fleet's own modules.

A module that does not parse, or whose rules call something that does not exist, is a problem
located at its file and line, so a commit carrying it is refused before anything is applied.
Parsing alone (``Engine.add_policy``) misses unknown functions, which regorus only finds when a
rule is evaluated; compiling every rule as an entry point of an RVM program finds them up front.
The compiled program is thrown away: decisions run on ``Engine``, because regorus's ``Rvm`` answers
``not x in data.missing`` as true where OPA leaves it undefined (15 of 200 sample decisions differed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

import regorus

from reconciler import errors

__all__ = ["check_modules", "engine_message", "packages", "ref_path"]

_LOCATION_RE = re.compile(r"-->\s*(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+)")
_ERROR_RE = re.compile(r"^error:\s*(?P<message>.*)$", re.MULTILINE)
_USER_ERROR_RE = re.compile(r"unknown function|could not find function|undefined|unsafe var|recursion", re.IGNORECASE)


def engine_message(exc: BaseException) -> tuple[str | None, int | None, str]:
    """(file, line, message) out of a regorus error, without its Rust backtrace."""
    text = str(exc).split("Stack backtrace:", 1)[0]
    text = text.split("Caused by:", 1)[0]
    messages = [m.group("message").strip() for m in _ERROR_RE.finditer(text)]
    message = next((m for m in reversed(messages) if m and m != "Compilation error:"), None)
    locations = list(_LOCATION_RE.finditer(text))
    location = locations[-1] if locations else None
    if message is None:
        message = " ".join(text.split()) or type(exc).__name__
    if location is None:
        return None, None, message
    return location.group("file"), int(location.group("line")), message


def check_modules(modules: Mapping[str, str], compile_only: Collection[str] | None = None) -> list[errors.Problem]:
    """Every problem that stops ``modules`` (path → text) from compiling together.

    All modules must parse. The deeper check (every rule compiled, so unknown functions are
    found) runs on the rules of ``compile_only`` (default: every module), so a fleet's modules
    are checked without tripping over library constructs the checker does not support.
    """
    engine = regorus.Engine()
    problems: list[errors.Problem] = []
    for path, text in modules.items():
        try:
            engine.add_policy(path, text)
        except RuntimeError as exc:
            file, line, message = engine_message(exc)
            problems.append(errors.Problem(file or path, line=line, message=f"Rego does not compile: {message}"))
    if problems:
        return problems
    # Tests are left to ``armctl policy test``: the RVM compiler does not support ``with``.
    policy_modules = {p: t for p, t in modules.items() if not p.endswith("_test.rego")}
    checked = set(policy_modules) if compile_only is None else set(compile_only) & set(policy_modules)
    ast = [m for m in json.loads(engine.get_ast_as_json()) if m["source"]["file"] in checked]
    problems.extend(_unconsulted(ast, policy_modules))
    entry_points = _entry_points(ast)
    if not entry_points:
        return []
    try:
        regorus.Program.compile_from_modules("{}", list(policy_modules.items()), sorted(entry_points))
    except RuntimeError as exc:
        file, line, message = engine_message(exc)
        # The RVM compiler also fails on valid Rego it does not support yet; only errors that
        # are certainly the module's fault refuse a commit (the rest surface on evaluation).
        if _USER_ERROR_RE.search(message):
            problems.append(errors.Problem(file or "<rego>", line=line, message=f"Rego does not compile: {message}"))
    return problems


#: Rules the decision gathers from fleet packages directly under ``arm.ext``.
_GATHERED = ("deny", "approval")
_PACKAGE_RE = re.compile(r"^\s*package\b", re.MULTILINE)


def _unconsulted(ast: list[dict[str, Any]], texts: Mapping[str, str]) -> list[errors.Problem]:
    """``deny``/``approval`` rules the decision would never see: declared in a package other
    than ``arm.ext.<name>``, they would be silently ignored, so the commit is refused instead.
    A module of helpers (no such rules) may live in any package."""
    problems = []
    for module in ast:
        package = ref_path(module["ast"]["package"]["refr"])
        if len(package) == 3 and package[:2] == ["arm", "ext"]:
            continue  # a fleet extension the decision gathers (only fleet modules are checked here)
        heads = {path[0] for rule in module["ast"]["rules"] if (path := _head_path(rule))}
        found = sorted(heads & set(_GATHERED))
        if found:
            file = module["source"]["file"]
            match = _PACKAGE_RE.search(texts.get(file, ""))
            line = texts[file].count("\n", 0, match.start()) + 1 if match else None
            problems.append(
                errors.Problem(
                    file,
                    line=line,
                    message=f"package {'.'.join(package)} declares {' and '.join(found)} rules, but the decision gathers"
                    " them only from packages directly under arm.ext: name the package arm.ext.<name>",
                )
            )
    return problems


def _head_path(rule: dict[str, Any]) -> list[str]:
    """The path a rule's head defines; empty for a function."""
    spec = rule.get("Spec")
    if spec is None:
        return []
    ((head_kind, head),) = spec["head"].items()
    return [] if head_kind == "Func" else ref_path(head["refr"])


def _entry_points(ast: list[dict[str, Any]]) -> set[str]:
    points: set[str] = set()
    for module in ast:
        package = ref_path(module["ast"]["package"]["refr"])
        for rule in module["ast"]["rules"]:
            path = _head_path(rule)  # functions are compiled through the rules that call them
            if path:
                points.add("data." + ".".join(package + path[:1]))
    return points


def packages(modules: Mapping[str, str]) -> list[list[str] | None] | None:
    """The package each of ``modules`` declares, as regorus parses it: its segments, or None for
    one indexed by anything but a string. None when a module does not parse (``check_modules``
    says why)."""
    engine = regorus.Engine()
    try:
        for path, text in modules.items():
            engine.add_policy(path, text)
    except RuntimeError:
        return None
    return [_exact_path(m["ast"]["package"]["refr"]) for m in json.loads(engine.get_ast_as_json())]


def _exact_path(ref: dict[str, Any]) -> list[str] | None:
    ((kind, node),) = ref.items()
    if kind == "Var":
        return [str(node["value"])]
    inner = _exact_path(node["refr"]) if kind in ("RefDot", "RefBrack") else None
    if inner is None:
        return None
    if kind == "RefDot":
        return [*inner, str(node["field"][1])]
    index = node["index"]
    return [*inner, str(index["String"]["value"])] if "String" in index else None


def ref_path(ref: dict[str, Any]) -> list[str]:
    ((kind, node),) = ref.items()
    if kind == "Var":
        return [str(node["value"])]
    if kind == "RefDot":
        return [*ref_path(node["refr"]), str(node["field"][1])]
    if kind == "RefBrack":
        return ref_path(node["refr"])
    return []
