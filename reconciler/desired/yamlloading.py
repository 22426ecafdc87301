"""Safe, fast YAML: libyaml's event stream turned into plain Python data in one loop.

Why not ``yaml.load(..., CSafeLoader)``: its constructor is Python walking a composed node graph
(twice the work), libyaml's composer recurses in C and crashes the process on input nested a few
thousand levels deep, and aliases are expanded only later by whoever walks the data. Building
straight from events fixes all three; the YAML semantics are PyYAML's ``SafeLoader`` except that
timestamps stay strings (as in Kubernetes) and only the core tags are accepted.

Refused, each with the line it was found at: nesting deeper than :data:`MAX_DEPTH`, documents
whose aliases expand past :data:`MAX_NODES` nodes (alias bombs), recursive aliases, duplicate
keys, collections as keys, unknown tags, numbers JSON cannot hold (NaN, infinities, integers
beyond 64 bits). :class:`Locator` composes a file (safe once it passed here) to point a schema
error at the line of a field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_NODES", "Locator", "Refused", "document_of", "read_documents"]

MAX_NODES = 100_000
MAX_DEPTH = 64

_CParser = getattr(yaml, "CSafeLoader", None)
_Loader: type[Any] = _CParser if _CParser is not None else yaml.SafeLoader

_TAG = "tag:yaml.org,2002:"
_TIMESTAMP = _TAG + "timestamp"
_RESOLVERS: dict[str | None, list[tuple[str, Any]]] = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
_SCALARS = yaml.constructor.SafeConstructor()
_CONSTRUCT = {
    _TAG + "str": lambda v: v,
    _TAG + "null": lambda v: None,
    _TAG + "bool": lambda v: _SCALARS.construct_yaml_bool(yaml.ScalarNode(_TAG + "bool", v)),
    _TAG + "int": lambda v: _SCALARS.construct_yaml_int(yaml.ScalarNode(_TAG + "int", v)),
    _TAG + "float": lambda v: _SCALARS.construct_yaml_float(yaml.ScalarNode(_TAG + "float", v)),
    _TAG + "merge": lambda v: v,
    _TAG + "value": lambda v: v,
}
_COLLECTION_TAGS = {_TAG + "map", _TAG + "seq"}
_OPEN = object()  # an anchor whose collection is still being built


class Refused(Exception):
    """Input this reader will not build, with the 1-based line it was found at."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@dataclasses.dataclass(slots=True)
class _Frame:
    container: Any
    is_map: bool
    start_count: int
    anchor: str | None
    key: Any = _OPEN  # mappings: the key waiting for its value (_OPEN when none)
    key_event: Any = None
    merges: list[Any] | None = None
    height: int = 1  # levels of collections from this one down, aliases expanded


def _line(event: Any) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


_INT64 = (-(2**63), 2**64 - 1)


class _Unrepresentable(ValueError):
    """A number YAML can write but JSON, the store and the genome hash cannot hold exactly."""


def _checked(value: Any, text: str) -> Any:
    """Refuse numbers JSON (and so the store and the genome hash) cannot hold exactly."""
    kind = type(value)
    if kind is float and (value != value or value in (math.inf, -math.inf)):
        raise _Unrepresentable(f"{text!r}: infinite and NaN numbers are not allowed")
    if kind is int and not _INT64[0] <= value <= _INT64[1]:
        raise _Unrepresentable(f"{text[:40]!r}: integers must fit in 64 bits")
    return value


def _resolve_plain(value: str) -> Any:
    for rtag, regexp in _RESOLVERS.get(value[:1] if value else "", ()):
        if regexp.match(value):
            return _checked(_CONSTRUCT[rtag](value), value)
    return value


def _short(tag: str | None) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag and tag.startswith(_TAG) else repr(tag)


def _scalar(event: Any) -> Any:
    tag = event.tag
    value = event.value
    try:
        if tag is None or tag == "!":
            if event.style or tag == "!" or not event.implicit[0]:
                return value  # quoted, block or non-specific: a string
            return _resolve_plain(value)
        construct = _CONSTRUCT.get(tag)
        if construct is None:
            what = "does not fit a scalar" if tag in _COLLECTION_TAGS else "is not supported"
            raise Refused(f"tag {_short(tag)} {what}", _line(event))
        return _checked(construct(value), value)
    except _Unrepresentable as exc:
        raise Refused(str(exc), _line(event)) from exc
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, yaml.YAMLError) as exc:
        shown = value if len(value) <= 40 else value[:37] + "..."
        what = _short(tag) if tag and tag != "!" else "number"
        raise Refused(f"{shown!r} is not a valid {what}", _line(event)) from exc


def read_documents(text: str) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, line, data)`` for each document of ``text``.

    Raises :class:`Refused` or ``yaml.YAMLError`` (with its mark) at the first thing it refuses;
    documents before it have been yielded.
    """
    loader = _Loader(text)
    position = [0]
    try:
        yield from _documents(loader, position)
    except (Refused, yaml.YAMLError) as exc:
        exc.document = max(position[0], 0)  # type: ignore[union-attr]
        raise
    finally:
        loader.dispose()


def document_of(exc: BaseException) -> int:
    """The index of the document a ``read_documents`` error was raised in."""
    return int(getattr(exc, "document", 0))


def _documents(loader: Any, position: list[int]) -> Iterator[tuple[int, int, Any]]:
    index = -1
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int, int]] = {}  # name → (value, expanded nodes, height)
    count = 0
    doc_line = 0
    result: Any = None
    plain: dict[str, Any] = {}
    get_event = loader.get_event
    ScalarEvent = yaml.ScalarEvent  # noqa: N806 - a local for the hot loop
    while True:
        event = get_event()
        if event is None:
            return
        etype = type(event)
        if etype is ScalarEvent:
            if event.tag is None and not event.style:
                # Plain scalars repeat (keys above all): resolve each distinct text once.
                raw = event.value
                value = plain.get(raw, _OPEN)
                if value is _OPEN:
                    value = _scalar(event)
                    if len(plain) < 50_000:
                        plain[raw] = value
            else:
                value = _scalar(event)
            count += 1
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1, 0)
            if stack:
                frame = stack[-1]
                if not frame.is_map:
                    frame.container.append(value)
                elif frame.key is _OPEN:
                    frame.key = _MERGE_KEY if (value == "<<" and not event.style) else value
                    frame.key_event = event
                else:
                    _put(frame, value)
            else:
                result = value
                doc_line = doc_line or (_line(event) or 0)
        elif etype is yaml.AliasEvent:
            found = anchors.get(event.anchor)
            if found is None:
                raise Refused(f"unknown alias {event.anchor!r}", _line(event))
            value, size, height = found
            if value is _OPEN:
                raise Refused("recursive alias: a node contains itself", _line(event))
            count += size
            if count > MAX_NODES:
                raise Refused(f"document expands to more than {MAX_NODES} nodes through aliases (alias bomb?)", _line(event))
            if len(stack) + height > MAX_DEPTH:
                raise Refused(f"document is nested deeper than {MAX_DEPTH} levels (through alias {event.anchor!r})", _line(event))
            if not stack:
                result = value
                continue
            frame = stack[-1]
            frame.height = max(frame.height, height + 1)
            if not frame.is_map:
                frame.container.append(value)
            elif frame.key is _OPEN:
                if isinstance(value, dict | list):
                    raise Refused("a mapping key must be a scalar", _line(event))
                frame.key = value
                frame.key_event = event
            else:
                _put(frame, value)
        elif etype is yaml.MappingStartEvent or etype is yaml.SequenceStartEvent:
            is_map = etype is yaml.MappingStartEvent
            tag = event.tag
            if tag is not None and tag != "!" and tag != (_TAG + "map" if is_map else _TAG + "seq"):
                what = "a mapping" if is_map else "a sequence"
                why = "does not fit" if tag in _COLLECTION_TAGS or tag in _CONSTRUCT else "is not supported on"
                raise Refused(f"tag {_short(tag)} {why} {what}", _line(event))
            if len(stack) >= MAX_DEPTH:
                raise Refused(f"document is nested deeper than {MAX_DEPTH} levels", _line(event))
            if stack and stack[-1].is_map and stack[-1].key is _OPEN:
                raise Refused("a mapping key must be a scalar", _line(event))
            count += 1
            container: Any = {} if is_map else []
            if event.anchor is not None:
                anchors[event.anchor] = (_OPEN, 0, 0)
            if not stack:
                doc_line = _line(event) or 0
            stack.append(_Frame(container, is_map, count, event.anchor))
        elif etype is yaml.MappingEndEvent or etype is yaml.SequenceEndEvent:
            frame = stack.pop()
            value = frame.container
            if frame.merges:
                merged: dict[Any, Any] = {}
                for source in reversed(frame.merges):
                    merged.update(source)
                merged.update(value)
                value.clear()
                value.update(merged)
            if frame.anchor is not None:
                anchors[frame.anchor] = (value, count - frame.start_count + 1, frame.height)
            if not stack:
                result = value
                continue
            parent = stack[-1]
            parent.height = max(parent.height, frame.height + 1)
            if not parent.is_map:
                parent.container.append(value)
            else:
                _put(parent, value)
        elif etype is yaml.DocumentStartEvent:
            index += 1
            position[0] = index
            anchors.clear()
            count = 0
            doc_line = 0
            result = None
        elif etype is yaml.DocumentEndEvent:
            yield index, doc_line, result


_MERGE_KEY = object()


def _put(frame: _Frame, value: Any) -> None:
    key = frame.key
    frame.key = _OPEN
    if key is _MERGE_KEY:
        if frame.merges is not None:
            raise Refused("duplicate key '<<'", _line(frame.key_event))
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(s, dict) for s in sources):
            raise Refused("a merge key (<<) needs a mapping or a list of mappings", _line(frame.key_event))
        frame.merges = list(sources)
        return
    if type(key) is not str:
        raise Refused(f"mapping keys must be strings, not {type(key).__name__} {key!r}", _line(frame.key_event))
    if key in frame.container:
        raise Refused(f"duplicate key {key!r}", _line(frame.key_event))
    frame.container[key] = value


class Locator:
    """Finds the line of a field in a file's documents; composes the file once, on first use.

    Only files with schema problems pay for composing (once, however many problems they have);
    the text has already passed ``read_documents``, so the composer's recursion is bounded.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._nodes: list[Any] | None = None
        # Each mapping's keys, indexed on first lookup: a file with a problem per field (thousands
        # of unknown fields) would otherwise scan the mapping once per problem.
        self._keys: dict[int, dict[str, Any]] = {}

    def _documents(self) -> list[Any]:
        if self._nodes is None:
            nodes: list[Any] = []
            loader = _Loader(self._text)
            try:
                while loader.check_node():
                    nodes.append(loader.get_node())
            except yaml.YAMLError:
                pass
            finally:
                loader.dispose()
            self._nodes = nodes
        return self._nodes

    def line(self, index: int, loc: tuple[Any, ...]) -> int | None:
        """The 1-based line of the deepest node ``loc`` reaches in document ``index``."""
        nodes = self._documents()
        if index >= len(nodes):
            return None
        current = nodes[index]
        for part in loc:
            nxt = None
            if isinstance(current, yaml.MappingNode) and isinstance(part, str):
                keys = self._keys.get(id(current))
                if keys is None:
                    keys = {}
                    for key_node, value_node in current.value:
                        if isinstance(key_node, yaml.ScalarNode):
                            keys.setdefault(key_node.value, value_node)  # the first, as the scan found
                    self._keys[id(current)] = keys
                nxt = keys.get(part)
            elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(current.value):
                nxt = current.value[part]
            if nxt is None:
                break
            current = nxt
        return int(current.start_mark.line) + 1
