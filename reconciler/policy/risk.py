"""Risk of one tool call: the catalog's level, raised by what the arguments show.

A tool's catalog entry gives its base level (GREEN < YELLOW < RED). The arguments of the call
can raise it, each raise with a reason the decision reports:

- a secret-like value (API keys, tokens, private keys, passwords) → RED;
- a production target (an argument naming a production environment, or a call from an
  instance in a production environment to a tool flagged ``productionImpact``) → one level up;
- a bulk or destructive operation (delete/drop/truncate, ``force``, ``all``, very large
  counts) → one level up.

The same patterns drive :func:`redact`, which every stored payload goes through. Pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["LEVELS", "REDACTED", "Assessment", "assess", "clean", "redact"]

LEVELS = ("GREEN", "YELLOW", "RED")
REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|auth(orization)?|session[_-]?key)$", re.I
)
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}"  # OpenAI-style keys
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,})"
)
_PRODUCTION = re.compile(r"(^|[^a-z])(prod|production|live)([^a-z]|$)", re.I)
_TARGET_KEY = re.compile(r"(env(ironment)?|target|cluster|host|stage|namespace|database|db)$", re.I)
_DESTRUCTIVE = re.compile(r"\b(delete|drop|truncate|destroy|purge|wipe|rm\s+-rf|terminate)\b", re.I)
_BULK_KEYS = {"all", "force", "recursive", "cascade"}
_BULK_COUNT = 1000


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Assessment:
    level: str
    catalog_level: str
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "catalogLevel": self.catalog_level, "reasons": list(self.reasons)}


def _leaf_key(key: str) -> str:
    """The name the key patterns read: a key's last dotted part, before any index (so that
    ``{"db.password": ...}`` and ``{"password[0]": ...}`` read as ``password``). Assessing and
    redacting both use it, so a value one calls a secret the other redacts."""
    return key.rsplit(".", 1)[-1].split("[", 1)[0]


#: JSON's leaves: told apart by type at once (``isinstance(x, Mapping)`` is a slow ABC check, and
#: these functions run on every decision's arguments).
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or (type(value) not in _SCALARS and isinstance(value, Mapping))


def _walk(value: Any, path: str = "", key: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) for every leaf of nested mappings and lists; a list's items have its key."""
    if _is_mapping(value):
        for name, item in value.items():
            yield from _walk(item, f"{path}.{name}" if path else str(name), _leaf_key(str(name)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]", key)
    else:
        yield path, key, value


def _is_secret(key: str, value: Any) -> bool:
    if isinstance(value, str) and _SECRET_VALUE.search(value):
        return True
    return bool(_SECRET_KEY.search(key)) and isinstance(value, str) and len(value) >= 6


def assess(
    catalog_level: str, args: Mapping[str, Any], *, production: bool = False, production_impact: bool = False
) -> Assessment:
    """The risk of calling a tool of ``catalog_level`` with ``args``."""
    rank = LEVELS.index(catalog_level)
    reasons: list[str] = []
    leaves = list(_walk(args))  # once: the three checks below read the same leaves
    secret = next((path for path, key, value in leaves if _is_secret(key, value)), None)
    if secret is not None:
        reasons.append(f"argument {secret} holds a secret-like value: RED")
        rank = 2
    target = next(
        (path for path, key, value in leaves if isinstance(value, str) and _TARGET_KEY.search(key) and _PRODUCTION.search(value)),
        None,
    )
    if target is not None:
        reasons.append(f"argument {target} targets production: raised one level")
        rank = min(rank + 1, 2)
    elif production and production_impact:
        reasons.append("production-impacting tool called from a production environment: raised one level")
        rank = min(rank + 1, 2)
    bulk = _bulk(leaves)
    if bulk is not None:
        reasons.append(f"{bulk}: raised one level")
        rank = min(rank + 1, 2)
    return Assessment(LEVELS[rank], catalog_level, tuple(reasons))


def _bulk(leaves: list[tuple[str, str, Any]]) -> str | None:
    for path, key, value in leaves:
        if isinstance(value, str) and _DESTRUCTIVE.search(value):
            return f"argument {path} is destructive"
        if key.lower() in _BULK_KEYS and value is True:
            return f"argument {path} asks for a bulk operation"
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and key.lower() in {"limit", "count", "batch", "size"}
            and value >= _BULK_COUNT
        ):
            return f"argument {path} is a bulk count ({value})"
    return None


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secret-like values replaced by ``[REDACTED]``."""
    if _is_mapping(value):
        return {k: redact(v, _leaf_key(str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if _is_secret(key, value):
        return REDACTED
    return value


def clean(value: Any) -> Any:
    """``value`` with NUL characters replaced: JSON columns on PostgreSQL cannot store them."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if _is_mapping(value):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
