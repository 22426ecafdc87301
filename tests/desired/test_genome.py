"""The canonical JSON form and genome hashes are pinned: a change here changes every hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from reconciler.desired import genome, models

CANONICAL = [
    ("keys are sorted", {"b": 1, "a": 2, "A": 3}, '{"A":3,"a":2,"b":1}'),
    ("nested keys are sorted", {"z": {"y": 1, "x": [{"d": 1, "c": 2}]}}, '{"z":{"x":[{"c":2,"d":1}],"y":1}}'),
    ("no whitespace", {"a": [1, 2, {"b": None}]}, '{"a":[1,2,{"b":null}]}'),
    ("booleans stay booleans", {"t": True, "f": False}, '{"f":false,"t":true}'),
    ("unicode is UTF-8, not escaped", {"name": "héllo ✓ 日本"}, '{"name":"héllo ✓ 日本"}'),
    ("quotes, backslashes and controls are escaped", {"s": 'a"b\\c\n\t\x01'}, '{"s":"a\\"b\\\\c\\n\\t\\u0001"}'),
    ("keys sort by code point", {"é": 1, "z": 2, "Z": 3}, '{"Z":3,"z":2,"é":1}'),
    ("integers as written", {"n": [0, -1, 10**20]}, '{"n":[0,-1,100000000000000000000]}'),
    ("integral floats drop the point", {"f": [1.0, -2.0, 0.0, -0.0]}, '{"f":[1,-2,0,0]}'),
    ("fractions in shortest form", {"f": [0.1, 0.2, 1.5, -3.25]}, '{"f":[0.1,0.2,1.5,-3.25]}'),
    ("small floats are decimal down to 1e-6", {"f": [1e-05, 1e-06, 0.000123]}, '{"f":[0.00001,0.000001,0.000123]}'),
    ("tiny floats use an exponent", {"f": [1e-07, 1.5e-10]}, '{"f":[1e-7,1.5e-10]}'),
    ("large floats are decimal below 1e21", {"f": [1e20, 1.5e20]}, '{"f":[100000000000000000000,150000000000000000000]}'),
    ("huge floats use an exponent", {"f": [1e21, 1.25e22]}, '{"f":[1e+21,1.25e+22]}'),
    ("nested lists keep their order", {"l": [[3, 2], [1, [0]]]}, '{"l":[[3,2],[1,[0]]]}'),
    ("tuples are lists", {"t": (1, "a")}, '{"t":[1,"a"]}'),
]


@pytest.mark.parametrize(("case", "value", "expected"), CANONICAL, ids=[c[0] for c in CANONICAL])
def test_canonical_json_is_pinned(case: str, value: object, expected: str) -> None:
    assert genome.canonical_json(value) == expected.encode("utf-8")


@pytest.mark.parametrize("value", [0.1, 1e-7, 123.456, 1e21, 5e-324, 1.7976931348623157e308, 2.5e-5])
def test_canonical_floats_round_trip(value: float) -> None:
    assert json.loads(genome.canonical_json(value)) == value


# Non-string keys are kept out earlier: the YAML reader refuses them (see test_parsing).
@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {"a": [1, float("-inf")]}])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        genome.canonical_json(value)


def _genome(**overrides: object) -> models.Genome:
    data: dict[str, object] = {
        "model": {"provider": "openai", "name": "gpt-4o", "parameters": {"temperature": 0.2, "max_tokens": 800}},
        "prompts": [{"file": "prompts/system.md"}, {"role": "few-shot", "file": "prompts/examples.md"}],
        "tools": [{"name": "crm.lookup"}],
    }
    data.update(overrides)
    return models.Genome.model_validate(data)


PROMPTS = {"prompts/system.md": genome.content_hash(b"You help.\n"), "prompts/examples.md": genome.content_hash(b"Q: hi\n")}


def test_genome_document_replaces_prompt_files_by_content_hash_and_omits_defaults() -> None:
    document = genome.genome_document(_genome(), PROMPTS)
    assert document == {
        "model": {"provider": "openai", "name": "gpt-4o", "parameters": {"temperature": 0.2, "max_tokens": 800}},
        "prompts": [
            {"contentHash": "sha256:" + hashlib.sha256(b"You help.\n").hexdigest()},
            {"role": "few-shot", "contentHash": "sha256:" + hashlib.sha256(b"Q: hi\n").hexdigest()},
        ],
        "tools": [{"name": "crm.lookup"}],
    }


def test_genome_hash_is_pinned() -> None:
    # If this changes, every stored genomeHash in every fleet breaks: do not update casually.
    assert genome.genome_hash(genome.genome_document(_genome(), PROMPTS)) == PINNED_HASH


PINNED_HASH = "sha256:e635c57cb9687683789ed6993f64132ea84b61a4d8c659cdfdbe5056389ca665"


def test_writing_a_default_explicitly_does_not_change_the_hash() -> None:
    explicit = _genome(memory={"kind": "none"}, provenance={})
    assert genome.genome_hash(genome.genome_document(explicit, PROMPTS)) == PINNED_HASH


def test_moving_a_prompt_file_keeps_the_hash_and_editing_it_changes_it() -> None:
    moved = _genome(prompts=[{"file": "other/system.md"}, {"role": "few-shot", "file": "prompts/examples.md"}])
    moved_hashes = {**PROMPTS, "other/system.md": PROMPTS["prompts/system.md"]}
    assert genome.genome_hash(genome.genome_document(moved, moved_hashes)) == PINNED_HASH
    edited = {**PROMPTS, "prompts/system.md": genome.content_hash(b"You help politely.\n")}
    assert genome.genome_hash(genome.genome_document(_genome(), edited)) != PINNED_HASH


def test_parameter_order_does_not_change_the_hash_but_values_do() -> None:
    reordered = _genome(model={"name": "gpt-4o", "parameters": {"max_tokens": 800, "temperature": 0.2}, "provider": "openai"})
    assert genome.genome_hash(genome.genome_document(reordered, PROMPTS)) == PINNED_HASH
    changed = _genome(model={"provider": "openai", "name": "gpt-4o", "parameters": {"temperature": 0.3, "max_tokens": 800}})
    assert genome.genome_hash(genome.genome_document(changed, PROMPTS)) != PINNED_HASH
