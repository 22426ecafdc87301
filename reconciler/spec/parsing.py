"""Parsing one manifest file: bytes → YAML documents → schema-checked manifests, or problems.

Hostile input is refused with a problem, never a traceback or a hang: non-UTF-8 bytes, YAML
alias bombs and recursive aliases (the expanded size of a document is computed on the node
graph before anything is constructed), nesting deeper than :data:`MAX_DEPTH`, duplicate keys,
and tags outside YAML's safe set. Timestamps stay strings (as in Kubernetes) so parsed data is
plain JSON-like Python and can be cached.

The result of a file depends only on its path and bytes, which is what lets ``loading`` cache it
by blob SHA. The C loader (libyaml) is used where present (NOTES.md: ~8x faster).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pydantic
import yaml

from reconciler import errors
from reconciler.spec import models

__all__ = ["MAX_DEPTH", "MAX_NODES", "Document", "ParsedFile", "parse_manifest_file"]

MAX_NODES = 100_000
MAX_DEPTH = 64

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_ANCHOR_RE = re.compile(r"&[^\s]")
_PREFIX_RE = re.compile(r"^[ \t?:&!\-]+", re.MULTILINE)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML with string timestamps and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


@dataclasses.dataclass(frozen=True)
class Document:
    """One schema-valid manifest document of a file, as plain data (cacheable)."""

    index: int
    line: int
    kind: str
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ParsedFile:
    documents: tuple[Document, ...]
    problems: tuple[errors.Problem, ...]


class _Refused(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def parse_manifest_file(path: str, content: bytes) -> ParsedFile:
    """Every document of one YAML file, each checked against the schema of its kind."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        return ParsedFile((), (errors.Problem(path, line=line, message=f"file is not UTF-8 (byte {exc.start})"),))
    if "\0" in text:
        return ParsedFile((), (errors.Problem(path, message="file contains NUL bytes"),))
    refusal = _too_deep(path, text)
    if refusal is not None:
        return ParsedFile((), (refusal,))
    check_graph = _ANCHOR_RE.search(text) is not None
    documents: list[Document] = []
    problems: list[errors.Problem] = []
    loader = _Loader(text)
    index = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.YAMLError as exc:
                problems.append(_yaml_problem(path, index, exc))
                break
            try:
                if check_graph:
                    _check_graph(node)
                data = loader.construct_document(node)
            except _Refused as exc:
                problems.append(errors.Problem(path, index, exc.line, None, str(exc)))
            except yaml.YAMLError as exc:
                problems.append(_yaml_problem(path, index, exc))
            except RecursionError:
                problems.append(errors.Problem(path, index, _line_of(node, ()), None, "document is nested too deeply"))
            else:
                _check_document(path, index, node, data, documents, problems)
            index += 1
    finally:
        loader.dispose()
    return ParsedFile(tuple(documents), tuple(problems))


def _yaml_problem(path: str, index: int, exc: yaml.YAMLError) -> errors.Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return errors.Problem(path, index, line, None, message)


def _too_deep(path: str, text: str) -> errors.Problem | None:
    """Refuse nesting deeper than MAX_DEPTH before libyaml composes it (it recurses in C).

    A block collection nested d levels starts after at least d-1 columns of indentation or
    compact-sequence dashes, and each flow level needs a bracket, so the cheap bound below is
    exact enough to skip the event scan for ordinary files.
    """
    prefix = max(map(len, _PREFIX_RE.findall(text)), default=0)
    if prefix + text.count("[") + text.count("{") < MAX_DEPTH:
        return None
    loader = _Loader(text)
    depth = 0
    index = -1
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                index += 1
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark is not None else None
                    return errors.Problem(path, index, line, None, f"document is nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # the parse proper reports the syntax error with its position
    finally:
        loader.dispose()
    return None


def _check_graph(root: yaml.Node) -> None:
    """Refuse recursive aliases, bombs (expanded size) and deep nesting before construction."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise _Refused(
                    f"document expands to more than {MAX_NODES} nodes through aliases (alias bomb?)",
                    node.start_mark.line + 1,
                )
            if depth[key] > MAX_DEPTH:
                raise _Refused(f"document is nested deeper than {MAX_DEPTH} levels", node.start_mark.line + 1)
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused("recursive alias: a node contains itself", node.start_mark.line + 1)
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) not in size:
                stack.append((kid, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_document(
    path: str,
    index: int,
    node: yaml.Node,
    data: Any,
    documents: list[Document],
    problems: list[errors.Problem],
) -> None:
    line = node.start_mark.line + 1
    if data is None:
        return  # an empty document ('---' followed by nothing) is allowed
    if not isinstance(data, dict):
        problems.append(errors.Problem(path, index, line, None, f"a manifest must be a mapping, not a {_yaml_type(data)}"))
        return
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    found = False
    if api_version is None:
        problems.append(errors.Problem(path, index, line, "apiVersion", "required field is missing"))
        found = True
    elif api_version != models.API_VERSION:
        problems.append(
            errors.Problem(
                path,
                index,
                _line_of(node, ("apiVersion",)),
                "apiVersion",
                f"unknown apiVersion {api_version!r} (expected {models.API_VERSION!r})",
            )
        )
        found = True
    if kind is None:
        problems.append(errors.Problem(path, index, line, "kind", "required field is missing"))
        return
    if not isinstance(kind, str) or kind not in models.KINDS:
        problems.append(
            errors.Problem(
                path,
                index,
                _line_of(node, ("kind",)),
                "kind",
                f"unknown kind {kind!r} (expected one of {', '.join(models.KINDS)})",
            )
        )
        return
    try:
        models.KINDS[kind].model_validate(data)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc == ("apiVersion",) and found:
                continue
            problems.append(errors.Problem(path, index, _line_of(node, loc), _field(loc), _message(err)))
        return
    if not found:
        documents.append(Document(index, line, kind, data))


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        return f"unknown field {loc[-1]!r}"
    if kind == "missing":
        return "required field is missing"
    message = str(err["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind not in {"model_type"} and "input" in err and not isinstance(err["input"], dict | list):
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message += f" (got {shown})"
    return message


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node ``loc`` reaches in the document."""
    current = node
    for part in loc:
        nxt = None
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    nxt = value_node
                    break
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(current.value):
            nxt = current.value[part]
        if nxt is None:
            break
        current = nxt
    return int(current.start_mark.line) + 1


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), type(value).__name__)
