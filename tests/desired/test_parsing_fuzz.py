"""Property tests of manifest parsing: whatever bytes a commit holds, the parser answers.

A file's bytes come from anyone who can push to the fleet repository, so
``parsing.parse_manifest_file`` must return a :class:`parsing.ParsedFile` for every input:
never an exception, and every problem an :class:`errors.Problem` about the file it was given.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import errors
from reconciler.desired import documents, models, parsing

PATH = "fleet/fuzz.yaml"

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEADER = "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: acme}\n"

FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "name", "tenant", "labels", "spec", "displayName", "contact", "template",
    "environment", "version", "replicas", "strategy", "type", "steps", "genome", "model", "provider", "parameters",
    "prompts", "tools", "risk", "provenance", "createdAt", "scope", "lifecycle", "permissions", "email",
]  # fmt: skip
SYNTAX = [
    ": ", "- ", "-", "[", "]", "{", "}", ", ", "? ", "&a ", "*a", "&b ", "*b", "<<: ", "---\n", "...\n", "#",
    "|\n", ">\n", "'", '"', "!!str ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!timestamp ", "!!binary ",
    "!!set ", "!!map ", "!!seq ", "!foo ", "%YAML 1.1\n", "\n", "\n  ", "\n    ", "\n- ", "  ", "\t", "\r\n",
]  # fmt: skip
SCALARS = [
    "arm/v1", "acme", "Canary", "GREEN", "PURPLE", "three", "0", "1", "-1", "100", "0x1F", "0x_", "0b_", "1_000",
    "3.14", ".inf", ".nan", "1e9", "true", "no", "~", "null", "2026-01-02", "2026-01-02T03:04:05Z", "''", '""', "é",
]  # fmt: skip
FRAGMENTS = SYNTAX + FIELD_NAMES + list(models.KINDS) + SCALARS

fragment = st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet="abz019 :-_.,", max_size=4))
yamlish_text = st.lists(fragment, max_size=60).map("".join)


def assert_answers_about(result: parsing.ParsedFile, path: str) -> None:
    assert isinstance(result, parsing.ParsedFile)
    for problem in result.problems:
        assert isinstance(problem, errors.Problem)
        assert problem.file == path
        assert problem.message
        assert problem.line is None or problem.line >= 1
        assert problem.document is None or problem.document >= 0
    for document in result.documents:
        assert isinstance(document, documents.Document)
        assert document.kind in models.KINDS
        assert isinstance(json.loads(result.raw[document.number]), dict)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_parser(content: bytes) -> None:
    assert_answers_about(parsing.parse_manifest_file(PATH, content), PATH)


@FUZZ
@given(st.text(max_size=2000))
def test_random_text_never_crashes_the_parser(text: str) -> None:
    assert_answers_about(parsing.parse_manifest_file(PATH, text.encode("utf-8")), PATH)


@FUZZ
@given(yamlish_text, st.booleans())
def test_yaml_like_fragments_never_crash_the_parser(text: str, with_header: bool) -> None:
    content = (HEADER + text if with_header else text).encode("utf-8")
    assert_answers_about(parsing.parse_manifest_file(PATH, content), PATH)


def json_like(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=25,
    )


# Anything YAML can write, including numbers JSON cannot hold (infinity, integers past 64 bits).
json_values = json_like(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20))
# Values JSON holds exactly: these must come back from parsing unchanged.
exact_json_values = json_like(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
tenant_specs = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"displayName": st.text(max_size=30), "contact": st.emails()}),
)


def dump(document: dict[str, Any], flow: bool | None) -> bytes:
    # allow_unicode stays off: with it PyYAML emits U+0085 raw in a single-quoted scalar and
    # reads it back as a line break, which would be PyYAML's bug, not the parser's.
    return yaml.safe_dump(document, default_flow_style=flow, sort_keys=False).encode("utf-8")


@FUZZ
@given(tenant_specs, st.sampled_from([None, False, True]))
def test_a_tenant_with_any_json_like_spec_parses_or_reports_problems(spec: Any, flow: bool | None) -> None:
    document = {"apiVersion": "arm/v1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": spec}
    result = parsing.parse_manifest_file(PATH, dump(document, flow))
    assert_answers_about(result, PATH)
    if result.documents:
        assert result.problems == ()
        assert [(d.number, d.line, d.kind) for d in result.documents] == [(0, 1, "Tenant")]
        assert json.loads(result.raw[0]) == document
    else:
        assert result.problems
        assert all(p.document == 0 for p in result.problems)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), exact_json_values, max_size=6), st.sampled_from([None, False, True]))
def test_any_json_like_model_parameters_come_back_unchanged(parameters: dict[str, Any], flow: bool | None) -> None:
    document = {
        "apiVersion": "arm/v1",
        "kind": "AgentVersion",
        "metadata": {"name": "support-agent@1.0.0"},
        "spec": {
            "template": "support-agent",
            "genome": {"model": {"provider": "openai", "name": "gpt-4o", "parameters": parameters}},
        },
    }
    result = parsing.parse_manifest_file(PATH, dump(document, flow))
    assert result.problems == ()
    assert json.loads(result.raw[0]) == document
