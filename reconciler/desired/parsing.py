"""Parsing one manifest file: bytes → YAML documents → schema-checked summaries, or problems.

Every document is checked against the model of its ``kind`` and summarised
(``documents.Document``); its data is also kept as JSON bytes so the full model can be built
later without parsing YAML again. The result depends only on the path and the bytes, which is
what lets ``loading`` cache it by blob SHA and parse files in worker processes.

Hostile input is refused with a problem, never a traceback or a hang: non-UTF-8 bytes, NUL
bytes, and whatever ``yamlloading`` refuses (alias bombs, deep nesting, duplicate keys, unsafe
tags).
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import yaml

from reconciler import errors
from reconciler.desired import documents, models, yamlloading

__all__ = ["MAX_DEPTH", "MAX_NODES", "ParsedFile", "parse_manifest_file"]

MAX_DEPTH = yamlloading.MAX_DEPTH
MAX_NODES = yamlloading.MAX_NODES


ParsedFile = documents.ParsedFile


def parse_manifest_file(path: str, content: bytes) -> ParsedFile:
    """Every document of one YAML file, each checked against the schema of its kind."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        return ParsedFile((), (errors.Problem(path, line=line, message=f"file is not UTF-8 (byte {exc.start})"),))
    if "\0" in text:
        return ParsedFile(
            (), (errors.Problem(path, line=text[: text.index("\0")].count("\n") + 1, message="file contains NUL bytes"),)
        )
    summaries: list[documents.Document] = []
    problems: list[errors.Problem] = []
    raw: dict[int, bytes] = {}
    invalid: list[tuple[str, str]] = []
    locator = yamlloading.Locator(text)
    try:
        for index, line, data in yamlloading.read_documents(text):
            count = len(problems)
            _check_document(path, locator, index, line, data, summaries, problems, raw)
            if len(problems) > count and isinstance(data, dict):
                name = data.get("metadata", {}).get("name") if isinstance(data.get("metadata"), dict) else None
                if isinstance(data.get("kind"), str) and isinstance(name, str):
                    invalid.append((data["kind"], name))
    except yamlloading.Refused as exc:
        problems.append(errors.Problem(path, yamlloading.document_of(exc), exc.line, None, str(exc)))
    except yaml.YAMLError as exc:
        problems.append(_yaml_problem(path, text, exc))
    return ParsedFile(tuple(summaries), tuple(problems), tuple(invalid), raw)


def _yaml_problem(path: str, text: str, exc: yaml.YAMLError) -> errors.Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        # A character YAML forbids: the file's problem, located by its position.
        at = text[: exc.position].count("\n") + 1
        return errors.Problem(path, None, at, None, f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}")
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    mark = problem_mark or context_mark
    if problem_mark is not None and context_mark is not None and problem_mark.line >= len(text.splitlines()):
        mark = context_mark  # the end of the file: what is still open is where the user must look
    line = mark.line + 1 if mark is not None else None
    problem = str(getattr(exc, "problem", None) or exc)
    if problem.startswith("exceeded maximum nesting depth"):
        # libyaml 0.2.5's scanner (PyYAML >= 6.0.2 bundles it) refuses deep flow nesting itself,
        # before ``yamlloading`` sees an event: the same refusal, in the project's words.
        return errors.Problem(
            path, yamlloading.document_of(exc), line, None, f"document is nested deeper than {MAX_DEPTH} levels"
        )
    if problem == "found character that cannot start any token" and problem_mark is not None:
        offending = text[problem_mark.index : problem_mark.index + 1]
        if offending:
            problem = f"found character {offending!r} that cannot start any token"
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return errors.Problem(path, yamlloading.document_of(exc), line, None, message)


def _check_document(
    path: str,
    locator: yamlloading.Locator,
    index: int,
    line: int,
    data: Any,
    summaries: list[documents.Document],
    problems: list[errors.Problem],
    raw: dict[int, bytes],
) -> None:
    if data is None:
        return  # an empty document ('---' followed by nothing) is allowed
    if not isinstance(data, dict):
        problems.append(errors.Problem(path, index, line, None, f"a manifest must be a mapping, not a {_yaml_type(data)}"))
        return
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    bad_api = False
    if api_version is None:
        problems.append(errors.Problem(path, index, line, "apiVersion", "required field is missing"))
        bad_api = True
    elif api_version != models.API_VERSION:
        problems.append(
            errors.Problem(
                path,
                index,
                locator.line(index, ("apiVersion",)),
                "apiVersion",
                f"unknown apiVersion {api_version!r} (expected {models.API_VERSION!r})",
            )
        )
        bad_api = True
    if kind is None:
        problems.append(errors.Problem(path, index, line, "kind", "required field is missing"))
        return
    if not isinstance(kind, str) or kind not in models.KINDS:
        problems.append(
            errors.Problem(
                path,
                index,
                locator.line(index, ("kind",)),
                "kind",
                f"unknown kind {kind!r} (expected one of {', '.join(models.KINDS)})",
            )
        )
        return
    try:
        manifest = models.KINDS[kind].model_validate(data)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc == ("apiVersion",) and bad_api:
                continue
            problems.append(errors.Problem(path, index, locator.line(index, loc), _field(loc), _message(err)))
        return
    if bad_api:
        return
    try:
        raw[index] = orjson.dumps(data)
    except TypeError as exc:  # e.g. a non-string key inside free-form parameters
        problems.append(errors.Problem(path, index, line, None, f"document cannot be stored as JSON: {exc}"))
        return
    summaries.append(documents.summarize(index, line, manifest, data))


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
    if "input" in err and not isinstance(err["input"], dict | list):
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message += f" (got {shown})"
    return message


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), type(value).__name__)
