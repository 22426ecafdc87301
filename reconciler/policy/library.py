"""The built-in Rego library (``policies/`` at the top of the project) and fleet modules.

In a source checkout the library is the top-level ``policies/`` directory; an installed wheel
carries the same files as ``reconciler/_policies``. Fleet modules come from the commit being
reconciled and are loaded next to the library, never instead of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from reconciler import errors

__all__ = ["builtin_modules", "digest", "library_dir", "modules_for"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


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
    return modules


def digest(modules: Mapping[str, str]) -> str:
    """A content digest of a set of modules (paths and texts)."""
    h = hashlib.sha256()
    for path in sorted(modules):
        h.update(path.encode() + b"\0" + modules[path].encode() + b"\0")
    return "sha256:" + h.hexdigest()
