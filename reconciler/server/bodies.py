"""Request bodies: how large each route's may be, and reading JSON that cannot hurt the server.

Every route has one body limit (:data:`LIMITS`, documented in the README); ``server.guarding``
refuses a larger declared ``Content-Length`` before reading a byte and stops reading at the limit.
:func:`parse` is the one JSON reader of the API: it counts the body's containers and values before
parsing (a megabyte of ``[]`` would hold the event loop ~90 ms while it is parsed), parses with
orjson (no NaN or Infinity, no lone surrogate, nesting past 1,024 refused), and walks the result
for what orjson lets through: nesting deeper than :data:`MAX_DEPTH` and integers past 64 bits
(orjson reads those as doubles, and the store cannot write them). Each refusal says where, as
:class:`Invalid`, which the routes answer 422 in the API's one error shape (:func:`error`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from reconciler.policy import inputs as policy_inputs

__all__ = [
    "DEFAULT_LIMIT",
    "LIMITS",
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_VALUES",
    "Invalid",
    "error",
    "limit_of",
    "parse",
    "problem",
]

KIB = 1024
MIB = 1024 * KIB

#: Each route's largest request body, by path pattern (first match wins); the README's table.
LIMITS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), limit)
    for pattern, limit in (
        (r"/v1/decisions", 1 * MIB),
        (r"/v1/events", 64 * KIB),
        (r"/v1/approvals/[^/]+/decision", 16 * KIB),
        (r"/v1/instances/[^/]+/controls", 16 * KIB),
        (r"/v1/tenants/[^/]+/controls", 16 * KIB),
        (r"/v1/evaluations", 1 * MIB),
        (r"/v1/data(/.*)?", 1 * MIB),
        (r"/logs", 1 * MIB),
        (r"/v1/webhooks/git", 4 * MIB),
    )
)

#: Every other route (reads, forms, OPA's refused writes).
DEFAULT_LIMIT = 64 * KIB

#: Deepest nesting of arrays and objects a body may have (the body itself is level 1).
MAX_DEPTH = 64

#: Most arrays and objects one body may hold (``{`` and ``[`` counted in its bytes, strings too).
MAX_CONTAINERS = 20_000

#: Most values one body may hold (``,`` counted in its bytes, strings too).
MAX_VALUES = 100_000

#: Largest integer stored exactly (the store and orjson write 64-bit integers).
_MAX_INT = 2**63 - 1
_MIN_INT = -(2**63)


#: Sixteen digits in a row: the only way a body can hold an integer orjson does not read exactly.
_LONG_DIGITS = re.compile(rb"[0-9]{16}")


def limit_of(path: str) -> int:
    """The body limit of the route at ``path``."""
    for pattern, limit in LIMITS:
        if pattern.fullmatch(path):
            return limit
    return DEFAULT_LIMIT


class Invalid(ValueError):
    """A body that is no acceptable JSON: ``loc`` (where, FastAPI-style), ``message``, ``kind``."""

    def __init__(self, loc: list[str | int], message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.kind = kind

    def problems(self) -> list[dict[str, Any]]:
        return [problem(self.kind, self.loc, self.message)]


def problem(kind: str, loc: list[str | int] | tuple[str | int, ...], message: str) -> dict[str, Any]:
    """One entry of a 422's ``problems``: what kind, where (``["body", "args", "x"]``), what is wrong."""
    return {"type": kind, "loc": list(loc), "msg": message}


def error(kind: str, message: str, problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The API's one error shape, for every status: ``{"error", "message"[, "problems"]}``."""
    body: dict[str, Any] = {"error": kind, "message": message}
    if problems:
        body["problems"] = problems
    return body


def bounded(raw: bytes) -> None:
    """Refuse a body with more containers or values than one request may hold, before parsing."""
    if len(raw) < 4096:
        return  # cannot hold enough of either to matter
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > MAX_CONTAINERS:
        raise Invalid(["body"], f"the body holds {containers} arrays and objects; at most {MAX_CONTAINERS} per request")
    values = raw.count(b",")
    if values > MAX_VALUES:
        raise Invalid(["body"], f"the body holds {values} values; at most {MAX_VALUES} per request")


def parse(raw: bytes, *, where: str = "body") -> Any:
    """The JSON document in ``raw``, or :class:`Invalid` saying what is wrong and where."""
    bounded(raw)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid([where], _why(raw, exc), "json_invalid") from None
    check(document, where)
    if _LONG_DIGITS.search(raw) is not None:
        # orjson reads an integer past 64 bits as a double: read the exact one, refused by check.
        document = json.loads(raw)
        check(document, where)
    return document


def check(document: Any, where: str = "body") -> None:
    """Refuse nesting past :data:`MAX_DEPTH` and integers orjson read as doubles (past 64 bits)."""
    stack: list[tuple[Any, int, list[str | int]]] = [(document, 1, [])]
    while stack:
        node, depth, path = stack.pop()
        kind = type(node)
        if kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise Invalid([where, *path], f"{_name(where, path)} is nested deeper than {MAX_DEPTH} levels")
            items = node.items() if kind is dict else enumerate(node)
            stack.extend((child, depth + 1, [*path, key]) for key, child in items if type(child) in (dict, list, int, float))
        elif kind is int and not _MIN_INT <= node <= _MAX_INT:
            raise Invalid([where, *path], f"{_name(where, path)} is an integer past 64 bits: send it as a string")


def _why(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """orjson's reason, or the standard library's where it names a number (NaN, 1e400) better."""
    message = str(exc)
    if "depth limit" in message:
        return f"JSON decode error: nested deeper than {MAX_DEPTH} levels"
    if "not valid UTF-8" in message:  # orjson says "surrogates not allowed" for any bad byte
        return "JSON decode error: the body is not valid UTF-8"
    if "surrogate" in message:
        return f"JSON decode error: {message} (a lone UTF-16 surrogate is no text)"
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return f"JSON decode error: {message}"
    found = policy_inputs.number_problem(document, "")
    return found[1] if found is not None else f"JSON decode error: {message}"


def _name(where: str, path: list[str | int]) -> str:
    return policy_inputs.field_name("" if where == "body" else where, path) or where
