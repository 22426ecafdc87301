"""The embedded engine and the real OPA engine give the same answers, for any input.

A property test (hypothesis): well-formed, edge and malformed decision inputs, and gate inputs,
from the generators in differential.py, each asked of both engines at every entry point
(``data.arm.decision.result``, the Data API's ``POST /v1/data/arm/decision/result``, the
reconciler's ``unchecked`` for the inputs it builds, ``data.arm.gates.results``); an error on
either is a difference. CI runs a bounded number of examples; ``bench/bench_differential.py``
runs the same generators at 100,000+ inputs and prints the counts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.policy import engines, goopa
from tests.policy import differential
from tests.realopa import require

EXAMPLES = 400


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[engines.Engine, engines.Engine]]:
    require()
    bundle = differential.bundle()
    embedded, real = engines.EmbeddedEngine(), goopa.GoOpaEngine()
    embedded.load(bundle)
    real.load(bundle)
    yield embedded, real


_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(rng=st.randoms(use_true_random=False))
def test_both_engines_decide_every_input_alike(pair: tuple[engines.Engine, engines.Engine], rng: random.Random) -> None:
    kind, document = differential.decision_input(rng)
    assert differential.in_contract(document)
    tally = differential.Tally()
    differential.compare_decision(tally, *pair, kind, document)
    assert tally.examples == []


@_SETTINGS
@given(rng=st.randoms(use_true_random=False))
def test_both_engines_gate_every_step_alike(pair: tuple[engines.Engine, engines.Engine], rng: random.Random) -> None:
    kind, document = differential.gate_input(rng)
    tally = differential.Tally()
    differential.compare_gates(tally, *pair, kind, document)
    assert tally.examples == []


def test_the_generators_reach_every_kind_and_outcome(pair: tuple[engines.Engine, engines.Engine]) -> None:
    # Not a property: the inputs above are worth comparing only if they reach every answer.
    embedded, _ = pair
    rng = random.Random(14)
    decisions: dict[str, set[str]] = {}
    for _ in range(600):
        kind, document = differential.decision_input(rng)
        result = embedded.evaluate(differential.DECISION_RULE, document)
        decisions.setdefault(kind, set()).add(result["decision"])
    assert decisions["well-formed"] == {"ALLOW", "NEEDS_APPROVAL", "DENY"}
    assert decisions["edge"] >= {"ALLOW", "DENY"}
    assert decisions["malformed"] >= {"DENY"}
    gates = [embedded.evaluate(differential.GATES_RULE, differential.gate_input(rng)[1]) for _ in range(200)]
    outcomes = {r["allowed"] for results in gates for r in results.values()}
    assert outcomes == {True, False}
