"""Parsing one manifest file: every way a file can be wrong, and the exact problem it yields.

Each case compares whole :class:`errors.Problem` values (file, document index, line, field,
message), so a problem that points at the wrong line or field fails here. Sources are written
one line per argument of :func:`lines`, so line N of a file is argument N.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from reconciler import errors
from reconciler.desired import models, parsing
from tests import timing

PATH = "fleet/agents/support.yaml"
KIND_LIST = "Tenant, Project, Environment, Role, Operator, ToolCatalog, AgentTemplate, EvaluationSuite, AgentVersion, PolicyEnvelope, Deployment, NotificationChannel"


def lines(*source: str) -> str:
    return "\n".join(source) + "\n"


def parse(source: str | bytes) -> parsing.ParsedFile:
    return parsing.parse_manifest_file(PATH, source if isinstance(source, bytes) else source.encode("utf-8"))


def problem(document: int | None, line: int | None, field: str | None, message: str) -> errors.Problem:
    return errors.Problem(PATH, document, line, field, message)


HEADER = ("apiVersion: arm/v1", "kind: Tenant", "metadata: {name: acme}")
VERSION_HEADER = ("apiVersion: arm/v1", "kind: AgentVersion", "metadata: {name: support-agent@1.0.0}")
DEPLOYMENT_HEAD = (
    "apiVersion: arm/v1",
    "kind: Deployment",
    "metadata: {name: support-prod}",
    "spec:",
    "  template: support-agent",
    "  environment: prod",
    "  version: support-agent@1.0.0",
)


def _nested_block_mappings(levels: int) -> str:
    """A Tenant whose spec nests ``levels`` block mappings; mapping depth d starts on line d + 3."""
    return lines(*HEADER, "spec:", *("  " * i + f"level{i}:" for i in range(1, levels + 1)))


PARAMETERS_HEAD = (
    *VERSION_HEADER,
    "spec:",
    "  template: support-agent",
    "  genome:",
    "    model:",
    "      provider: openai",
    "      name: gpt-4o",
    "      parameters:",
)


def with_parameters(*rows: str) -> str:
    """An AgentVersion whose free-form model parameters (any value is schema-valid) start on line 11."""
    return lines(*PARAMETERS_HEAD, *rows)


def _alias_bomb() -> str:
    """Billion laughs: nine lists of nine aliases of the list before (9**9 leaves once expanded)."""
    rows = ['  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return lines(*HEADER, "spec:", *rows)


BAD_FILES = [
    # ------------------------------------------------------------------ malformed YAML
    pytest.param(
        lines(*HEADER[:2], "metadata: {name: [acme}"),
        [problem(0, 3, None, "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence)")],
        id="unclosed-bracket",
    ),
    pytest.param(
        # The bracket opened on line 5 is still open at the end of the file; libyaml notices on
        # line 6, which does not exist in the file. The user has to look at line 5.
        lines(
            "apiVersion: arm/v1", "kind: Role", "metadata: {name: release-manager}", "spec:", "  permissions: [approvals:decide"
        ),
        [problem(0, 5, None, "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence)")],
        id="unclosed-bracket-at-end-of-file-points-at-the-bracket",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata:", "  name: acme", " labels: {team: support}"),
        [problem(0, 5, None, "invalid YAML: did not find expected key (while parsing a block mapping)")],
        id="bad-indentation-dedent",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata:", "  name: acme", "    labels: {team: support}"),
        [problem(0, 5, None, "invalid YAML: mapping values are not allowed in this context")],
        id="bad-indentation-indent",
    ),
    pytest.param(
        # libyaml does not say which character; a tab is invisible in most editors, so the
        # message must name it (PyYAML's pure-Python scanner words it like this).
        lines(*HEADER[:2], "metadata:", "\tname: acme"),
        [
            problem(
                0, 4, None, "invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token)"
            )
        ],
        id="tab-indentation-names-the-tab",
    ),
    pytest.param(
        lines(*HEADER, "kind: Project"),
        [problem(0, 4, None, "duplicate key 'kind'")],
        id="duplicate-top-level-key",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata:", "  name: acme", "  name: other"),
        [problem(0, 5, None, "duplicate key 'name'")],
        id="duplicate-nested-key",
    ),
    # ------------------------------------------------------------------ apiVersion and kind
    pytest.param(
        lines("apiVersion: arm/v2", *HEADER[1:]),
        [problem(0, 1, "apiVersion", "unknown apiVersion 'arm/v2' (expected 'arm/v1')")],
        id="unknown-api-version",
    ),
    pytest.param(
        lines(*HEADER[1:]),
        [problem(0, 1, "apiVersion", "required field is missing")],
        id="missing-api-version",
    ),
    pytest.param(
        lines(HEADER[0], HEADER[2]),
        [problem(0, 1, "kind", "required field is missing")],
        id="missing-kind",
    ),
    pytest.param(
        lines(HEADER[0], "kind: Tennant", HEADER[2]),
        [problem(0, 2, "kind", f"unknown kind 'Tennant' (expected one of {KIND_LIST})")],
        id="unknown-kind",
    ),
    pytest.param(
        lines("- apiVersion: arm/v1", "- kind: Tenant"),
        [problem(0, 1, None, "a manifest must be a mapping, not a list")],
        id="document-is-a-list",
    ),
    pytest.param(
        lines("just some words"),
        [problem(0, 1, None, "a manifest must be a mapping, not a string")],
        id="document-is-a-string",
    ),
    # ------------------------------------------------------------------ schema
    pytest.param(
        lines(*HEADER[:2], "metadata:", "  name: acme", "  lables: {team: support}"),
        [problem(0, 5, "metadata.lables", "unknown field 'lables'")],
        id="unknown-field-in-metadata",
    ),
    pytest.param(
        lines(
            *VERSION_HEADER,
            "spec:",
            "  template: support-agent",
            "  genome:",
            "    model:",
            "      provider: openai",
            "      name: gpt-4o",
            "      temprature: 0.2",
        ),
        [problem(0, 10, "spec.genome.model.temprature", "unknown field 'temprature'")],
        id="unknown-field-deep-in-spec",
    ),
    pytest.param(
        lines(*DEPLOYMENT_HEAD, "  replicas: three"),
        [problem(0, 8, "spec.replicas", "Input should be a valid integer, unable to parse string as an integer (got 'three')")],
        id="wrong-type",
    ),
    pytest.param(
        lines(
            "apiVersion: arm/v1",
            "kind: ToolCatalog",
            "metadata: {name: tools}",
            "spec:",
            "  tools:",
            "    - {name: crm.lookup, risk: GREEN}",
            "    - name: email.send",
            "      risk: PURPLE",
        ),
        [problem(0, 8, "spec.tools[1].risk", "Input should be 'GREEN', 'YELLOW' or 'RED' (got 'PURPLE')")],
        id="enum-value-wrong",
    ),
    pytest.param(
        lines(*VERSION_HEADER, "spec:", "  template: support-agent", "  lifecycle: DRAFT"),
        [problem(0, 5, "spec.genome", "required field is missing")],
        id="missing-required-field",
    ),
    pytest.param(
        lines(*DEPLOYMENT_HEAD, "  strategy:", "    type: Canary"),
        [problem(0, 9, "spec.strategy", "a Canary strategy needs weight steps, e.g. steps: [10, 50, 100]")],
        id="canary-without-steps",
    ),
    pytest.param(
        # The complaint is about the steps, so it must point at the steps (line 10), not at
        # `type: Canary` (line 9) where the strategy mapping starts.
        lines(*DEPLOYMENT_HEAD, "  strategy:", "    type: Canary", "    steps: [50, 10, 100]"),
        [problem(0, 10, "spec.strategy.steps", "canary steps must increase strictly and end at 100")],
        id="canary-steps-not-increasing-point-at-the-steps",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata:", "  name: Acme"),
        [problem(0, 4, "metadata.name", f"String should match pattern '{models.NAME_PATTERN}' (got 'Acme')")],
        id="name-with-uppercase",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata:", "  name: acme corp"),
        [problem(0, 4, "metadata.name", f"String should match pattern '{models.NAME_PATTERN}' (got 'acme corp')")],
        id="name-with-space",
    ),
    # ------------------------------------------------------------------ hostile bytes
    pytest.param(
        b"apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: caf\xe9}\n",
        [problem(None, 3, None, "file is not UTF-8 (byte 52)")],
        id="not-utf-8",
    ),
    pytest.param(
        # Like the not-UTF-8 case, the file-level refusal should say where the byte is.
        lines(HEADER[0], "kind: Ten\0ant", HEADER[2]),
        [problem(None, 2, None, "file contains NUL bytes")],
        id="nul-byte-has-a-line",
    ),
    pytest.param(
        # libyaml reports it with no line (and as document 0 wherever it is), and appends
        # '\n  in "<unicode string>", position 50' to the message. Like NUL, it is the file's.
        lines(*HEADER[:2], "metadata: {name: acme\x01}"),
        [problem(None, 3, None, "invalid YAML: unacceptable character #x0001: control characters are not allowed")],
        id="control-character-has-a-line",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata: !!python/object:os.system {name: acme}"),
        [
            problem(
                0,
                3,
                None,
                "tag !!python/object:os.system is not supported on a mapping",
            )
        ],
        id="python-object-tag",
    ),
    pytest.param(
        lines(*HEADER, "spec: !!python/object/apply:os.system ['echo owned']"),
        [
            problem(
                0,
                4,
                None,
                "tag !!python/object/apply:os.system is not supported on a sequence",
            )
        ],
        id="python-object-apply-tag",
    ),
    pytest.param(
        lines(*HEADER, "spec:", "  displayName: !!python/name:os.system"),
        [
            problem(
                0,
                5,
                None,
                "tag !!python/name:os.system is not supported",
            )
        ],
        id="python-name-tag",
    ),
    pytest.param(
        _alias_bomb(),
        [problem(0, 10, None, "document expands to more than 100000 nodes through aliases (alias bomb?)")],
        id="alias-bomb",
    ),
    pytest.param(
        lines(*HEADER[:2], "metadata: &m", "  name: acme", "  labels: *m"),
        [problem(0, 5, None, "recursive alias: a node contains itself")],
        id="recursive-alias",
    ),
    pytest.param(
        lines(*HEADER, "spec: {displayName: " + "[" * 100_000 + "]" * 100_000 + "}"),
        [problem(0, 4, None, "document is nested deeper than 64 levels")],
        id="flow-nesting-100000-deep",
    ),
    pytest.param(
        lines(*HEADER, "spec: {displayName: " + "[" * 100_000),
        [problem(0, 4, None, "document is nested deeper than 64 levels")],
        id="flow-nesting-100000-deep-never-closed",
    ),
    pytest.param(
        lines(*HEADER, "spec:", "  - " + "- " * 100_000 + "x"),
        [problem(0, 5, None, "document is nested deeper than 64 levels")],
        id="block-nesting-100000-deep-compact-sequences",
    ),
    pytest.param(
        _nested_block_mappings(parsing.MAX_DEPTH + 5),
        [problem(0, parsing.MAX_DEPTH + 4, None, "document is nested deeper than 64 levels")],
        id="block-nesting-of-indented-mappings",
    ),
    pytest.param(
        "[" * parsing.MAX_DEPTH + "]" * parsing.MAX_DEPTH + "\n",
        [problem(0, 1, None, "a manifest must be a mapping, not a list")],
        id="nesting-of-exactly-max-depth-is-allowed",
    ),
]


@pytest.mark.parametrize(("source", "expected"), BAD_FILES)
def test_a_bad_file_yields_exactly_the_expected_problems(source: str | bytes, expected: list[errors.Problem]) -> None:
    result = parse(source)
    assert list(result.problems) == expected
    assert result.documents == ()


def tenant(name: str) -> tuple[str, ...]:
    return ("apiVersion: arm/v1", "kind: Tenant", f"metadata: {{name: {name}}}")


def data_of(result: parsing.ParsedFile, number: int) -> Any:
    return json.loads(result.raw[number])


def test_only_the_bad_documents_of_a_multi_document_file_are_reported() -> None:
    source = lines(
        *tenant("first"),  # 1-3, document 0
        "---",
        "apiVersion: arm/v1",  # 5, document 1
        "kind: Tennant",
        "metadata: {name: second}",
        "---",
        *tenant("third"),  # 9-11, document 2
        "---",
        "apiVersion: arm/v1",  # 13, document 3
        "kind: Tenant",
        "metadata: {name: Fourth}",
        "---",
        *tenant("fifth"),  # 17-19, document 4
    )
    result = parse(source)
    assert list(result.problems) == [
        problem(1, 6, "kind", f"unknown kind 'Tennant' (expected one of {KIND_LIST})"),
        problem(3, 15, "metadata.name", f"String should match pattern '{models.NAME_PATTERN}' (got 'Fourth')"),
    ]
    assert [(d.number, d.line, d.kind, d.name) for d in result.documents] == [
        (0, 1, "Tenant", "first"),
        (2, 9, "Tenant", "third"),
        (4, 17, "Tenant", "fifth"),
    ]
    assert data_of(result, 2) == {"apiVersion": "arm/v1", "kind": "Tenant", "metadata": {"name": "third"}}


def test_a_syntax_error_stops_the_file_but_keeps_the_documents_before_it() -> None:
    source = lines(*tenant("first"), "---", *tenant("second"), "---", "apiVersion: [arm/v1", "---", *tenant("fourth"))
    result = parse(source)
    assert list(result.problems) == [
        problem(2, 10, None, "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence)")
    ]
    assert [(d.number, d.line, d.name) for d in result.documents] == [(0, 1, "first"), (1, 5, "second")]


def test_empty_documents_are_skipped_but_keep_their_index() -> None:
    source = lines("---", "---", "# only a comment", "---", *tenant("acme"), "---", "---")
    result = parse(source)
    assert result.problems == ()
    assert [(d.number, d.line, d.kind) for d in result.documents] == [(2, 5, "Tenant")]


@pytest.mark.parametrize("source", ["", "\n", "# nothing here\n", "---\n", "---\n...\n"], ids=repr)
def test_a_file_without_content_has_no_documents_and_no_problems(source: str) -> None:
    assert parse(source) == parsing.ParsedFile((), ())


def test_an_alias_bomb_is_refused_in_under_a_second() -> None:
    result, elapsed = timing.fastest(lambda: parse(_alias_bomb()))  # the quickest of 3: a busy host only adds time
    assert list(result.problems) == [
        problem(0, 10, None, "document expands to more than 100000 nodes through aliases (alias bomb?)")
    ]
    assert elapsed < 1.0


def test_nesting_made_deep_through_an_alias_is_refused() -> None:
    # Each line nests less than MAX_DEPTH, but `b` holds `deep` 30 levels down: 75 in all.
    source = with_parameters(
        "        a: &deep " + "[" * 40 + "x" + "]" * 40,
        "        b: " + "[" * 30 + "*deep" + "]" * 30,
    )
    assert list(parse(source).problems) == [
        problem(0, 12, None, "document is nested deeper than 64 levels (through alias 'deep')")
    ]


def test_timestamps_stay_strings() -> None:
    source = lines(
        *VERSION_HEADER,
        "spec:",
        "  template: support-agent",
        "  genome:",
        "    model: {provider: openai, name: gpt-4o, parameters: {since: 2026-01-02}}",
        "    provenance:",
        "      createdAt: 2026-01-02T03:04:05Z",
    )
    result = parse(source)
    assert result.problems == ()
    genome = data_of(result, 0)["spec"]["genome"]
    # A datetime would have come back from JSON as '2026-01-02T03:04:05+00:00'.
    assert genome["provenance"]["createdAt"] == "2026-01-02T03:04:05Z"
    assert genome["model"]["parameters"] == {"since": "2026-01-02"}


def test_a_small_merge_key_still_parses() -> None:
    source = lines(
        "apiVersion: arm/v1",
        "kind: ToolCatalog",
        "metadata: {name: tools}",
        "spec:",
        "  tools:",
        "    - &lookup {name: crm.lookup, risk: GREEN, external: true}",
        "    - <<: *lookup",
        "      name: crm.search",
    )
    result = parse(source)
    assert result.problems == ()
    assert result.documents[0].tools == ("crm.lookup", "crm.search")
    assert data_of(result, 0)["spec"]["tools"] == [
        {"name": "crm.lookup", "risk": "GREEN", "external": True},
        {"name": "crm.search", "risk": "GREEN", "external": True},
    ]


def test_a_mapping_that_overrides_a_merged_key_is_not_a_duplicate_when_merged_again_from_higher_up() -> None:
    # `careful` overrides `temperature` from its merge; `default`, one level shallower, merges
    # `careful`. (PyYAML's constructor flattened `careful` early and then saw `temperature` twice.)
    source = with_parameters(
        "        presets:",
        "          careful: &careful",
        "            <<: {temperature: 0.2, top_p: 1.0}",
        "            temperature: 0.0",
        "        default:",
        "          <<: *careful",
    )
    result = parse(source)
    assert result.problems == ()
    assert data_of(result, 0)["spec"]["genome"]["model"]["parameters"]["default"] == {"temperature": 0.0, "top_p": 1.0}


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        pytest.param("!!timestamp 2026-01-02", "timestamp", id="timestamp"),
        pytest.param("!!binary aGVsbG8=", "binary", id="binary"),
        pytest.param("!!set {a, b}", "set", id="set"),
        pytest.param("!!omap [a: 1]", "omap", id="omap"),
        pytest.param("!!pairs [a: 1]", "pairs", id="pairs"),
        pytest.param("!foo bar", None, id="local-tag"),
    ],
)
def test_a_tag_that_would_build_a_non_json_value_is_refused(value: str, tag: str | None) -> None:
    shown = f"!!{tag}" if tag else "'!foo'"
    kind = {"set": "a mapping", "omap": "a sequence", "pairs": "a sequence"}.get(tag or "")
    expected = f"tag {shown} is not supported on {kind}" if kind else f"tag {shown} is not supported"
    result = parse(with_parameters(f"        x: {value}"))
    assert list(result.problems) == [problem(0, 11, None, expected)]
    assert result.documents == ()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("!!map abc", id="map-tag-on-a-scalar"),
        pytest.param("!!map [a, b]", id="map-tag-on-a-sequence"),
        pytest.param("!!seq {a: b}", id="seq-tag-on-a-mapping"),
        pytest.param("!!str [a]", id="str-tag-on-a-sequence"),
        pytest.param("!!int {a: 1}", id="int-tag-on-a-mapping"),
    ],
)
def test_a_tag_on_the_wrong_kind_of_node_is_refused(value: str) -> None:
    # Located exactly; the wording is the parser's to choose.
    result = parse(with_parameters(f"        x: {value}"))
    assert [(p.file, p.document, p.line, p.field) for p in result.problems] == [(PATH, 0, 11, None)]
    assert result.documents == ()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("!!int abc", id="int-tag-on-a-word"),
        pytest.param("!!int ''", id="int-tag-on-empty"),
        pytest.param("!!float abc", id="float-tag-on-a-word"),
        pytest.param("!!float ''", id="float-tag-on-empty"),
        pytest.param("!!bool maybe", id="bool-tag-on-a-word"),
        pytest.param("!!bool ''", id="bool-tag-on-empty"),
        pytest.param("0x_", id="plain-hex-without-digits"),
        pytest.param("0b_", id="plain-binary-without-digits"),
        pytest.param("9" * 5000, id="plain-int-longer-than-python-converts"),
    ],
)
def test_a_scalar_python_cannot_convert_is_reported_not_raised(value: str) -> None:
    # Located exactly; the wording is the parser's to choose.
    result = parse(with_parameters(f"        x: {value}"))
    assert [(p.file, p.document, p.line, p.field) for p in result.problems] == [(PATH, 0, 11, None)]
    assert result.documents == ()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param(".inf", math.inf, id="infinity"),
        pytest.param("-.inf", -math.inf, id="minus-infinity"),
        pytest.param(".nan", math.nan, id="nan"),
        pytest.param(str(2**64), 2**64, id="integer-beyond-64-bits"),
    ],
)
def test_a_number_json_cannot_hold_is_kept_or_reported_at_its_line_never_changed(text: str, value: float) -> None:
    result = parse(with_parameters(f"        x: {text}"))
    if result.documents:
        stored = data_of(result, 0)["spec"]["genome"]["model"]["parameters"]["x"]
        assert stored == value or (math.isnan(value) and isinstance(stored, float) and math.isnan(stored))
    else:
        assert [(p.file, p.document, p.line) for p in result.problems] == [(PATH, 0, 11)]


def test_many_unknown_fields_are_reported_in_linear_time() -> None:
    # 500 problems in a 5 KB file. Each problem looks up its line; composing the whole file
    # again for each one (or scanning the whole mapping for each) makes this quadratic.
    count = 500
    source = lines(*HEADER[:2], "metadata:", "  name: acme", *(f"  field{i}: x" for i in range(count)))
    result = parse(source)
    assert len(result.problems) == count
    assert result.problems[-1] == problem(0, count + 4, f"metadata.field{count - 1}", f"unknown field 'field{count - 1}'")
    # Linear: ten times the problems costs about ten times as much, not a hundred. A ratio of two
    # timings taken in turns holds on a busy host where an absolute bound would not.
    few = lines(*HEADER[:2], "metadata:", "  name: acme", *(f"  field{i}: x" for i in range(count // 10)))
    elapsed, baseline = timing.fastest_pair(lambda: parse(source), lambda: parse(few))
    assert elapsed < 30 * baseline, (elapsed, baseline)


@pytest.mark.parametrize("key", ["1", "true", "null", "1.5"])
def test_a_mapping_key_that_is_not_a_string_is_refused(key: str) -> None:
    # JSON, the store and the genome hash only know string keys; `1: x` would silently become "1".
    result = parse(with_parameters(f"        {key}: x"))
    assert [(p.file, p.document, p.line, p.field) for p in result.problems] == [(PATH, 0, 11, None)]
    assert result.problems[0].message.startswith("mapping keys must be strings")
    assert result.documents == ()
