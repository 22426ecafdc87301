"""The built-in Rego library (``policies/`` at the top of the project) and fleet modules.

In a source checkout the library is the top-level ``policies/`` directory; an installed wheel
carries the same files as ``reconciler/_policies``. Fleet modules come from the commit being
reconciled and are loaded next to the library, never instead of it.

One library file is specialised per fleet: ``extensions.rego`` gathers the ``deny`` and
``approval`` rules of every package directly under ``data.arm.ext``. Written generally
(``data.arm.ext[_].deny``) the engine builds each such package whole on every decision, which
cost more than all of the library's own rules; :func:`modules_for` names the packages the
modules declare instead (as the engine parses them), and keeps the general form when a module
does not parse. Both give the same reasons; only a test that replaces ``data.arm.ext`` with packages no
module declares (``with data.arm.ext as {...}``) sees the difference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from reconciler import errors
from reconciler.policy import compiling

__all__ = ["EXTENSIONS", "builtin_modules", "digest", "extension_packages", "library_dir", "modules_for"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: The library file that gathers the fleet's reasons (see the module's docstring).
EXTENSIONS = "policies/arm/extensions.rego"


def library_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "_policies", _PACKAGE_DIR.parent / "policies"):
        if candidate.is_dir():
            return candidate
    raise errors.ConfigError(f"the built-in policy library is missing (looked in {_PACKAGE_DIR / '_policies'})")


def builtin_modules() -> dict[str, str]:
    """Library path (``policies/...``) → module text, tests included."""
    root = library_dir()
    return {f"policies/{p.relative_to(root).as_posix()}": p.read_text("utf-8") for p in sorted(root.rglob("*.rego"))}


def modules_for(fleet_modules: Mapping[str, str], *, tests: bool = True) -> dict[str, str]:
    """The library plus a fleet's modules; ``tests=False`` leaves out ``*_test.rego``."""
    modules = {**builtin_modules(), **fleet_modules}
    if not tests:
        modules = {p: t for p, t in modules.items() if not p.endswith("_test.rego")}
    names = extension_packages(modules)
    if names is not None and EXTENSIONS in modules:
        modules[EXTENSIONS] = _named_extensions(names)
    return modules


def extension_packages(modules: Mapping[str, str]) -> list[str] | None:
    """The packages directly under ``arm.ext`` that ``modules`` declare, as the engine parses
    them; None when a module does not parse (the general form is kept, and the compile check
    reports the module)."""
    declared = compiling.packages(modules)
    if declared is None:
        return None
    return sorted({path[2] for path in declared if path is not None and len(path) == 3 and path[:2] == ["arm", "ext"]})


def _named_extensions(names: list[str]) -> str:
    lines = [
        "# Generated for this fleet from the library's extensions.rego (see reconciler/policy/library.py):",
        "# the packages directly under data.arm.ext, named one by one.",
        "package arm.decision",
        "",
        "import rego.v1",
        "",
    ]
    for name in names:
        ref = f"data.arm.ext[{json.dumps(name)}]"
        lines += [f"deny_reasons contains msg if some msg in {ref}.deny", ""]
        lines += [f"approval_reasons contains msg if some msg in {ref}.approval", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def digest(modules: Mapping[str, str]) -> str:
    """A content digest of a set of modules (paths and texts)."""
    h = hashlib.sha256()
    for path in sorted(modules):
        h.update(path.encode() + b"\0" + modules[path].encode() + b"\0")
    return "sha256:" + h.hexdigest()
