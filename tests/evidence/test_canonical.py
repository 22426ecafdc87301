"""The chain's fast canonical encoding writes exactly the bytes of the canonical JSON that every
stored hash was made with (``desired.genome.canonical_json``), whatever the record holds."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.audit import chain
from reconciler.desired import genome

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(VALUES)
def test_the_fast_encoding_is_the_canonical_one(value: Any) -> None:
    record = {"tenant": "acme", "seq": 7, "at": "2026-12-01T10:59:01.123456Z", "after": value}
    assert chain.canonical(record) == genome.canonical_json(record)


def test_floats_and_times_in_text_take_the_exact_path() -> None:
    for value in (1.0, 1e-7, 1e21, -0.0, 2.5, [1.0, "12:30.5,"], {"t": "a:1.5,"}):
        assert chain.canonical({"v": value}) == genome.canonical_json({"v": value})
