"""One decision table, every engine: embedded regorus, the real OPA engine, and OPA through its API.

The table is ~180 cases: hand-written rows that pin the semantics, plus generated combinations
of instance state, tool flags, risk, envelope limits, spend, repeats and approvals. Each case's
expected answer comes from a small reference model of the documented rules (decision_cases.py),
written independently of the Rego; every engine must give exactly that answer. Malformed inputs
(a field the decision reads missing or of the wrong type, no input at all) are rows of their
own, each denied with the reason that names the field; the sample fleet's own rules have rows of
their own; and every engine answers the Data API's queries alike.

The engines: ``embedded`` (regorus, what decisions run on), ``real-opa`` (OPA's Go engine in
process, ``policy.goopa``) and ``opa-client`` (the project's OPA client, ``policy.opa``, against
a server speaking OPA's REST protocol over that same real engine, ``opa_double.py``). The last
two need the real OPA engine: without it they fail in CI and are skipped elsewhere (tests/realopa.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.policy import engines, goopa, inputs, library, opa
from tests.policy.decision_cases import CASES, FLEET_CASES, MALFORMED, PINNED, QUERIES, fleet_modules, make_input, reference
from tests.policy.opa_double import OpaDouble
from tests.realopa import require


def test_the_reference_agrees_with_the_pinned_rows() -> None:
    assert [reference(make_input(**kw))["decision"] for _, kw, _ in PINNED] == [expected for _, _, expected in PINNED]
    assert len(CASES) >= 100
    assert {reference(i)["decision"] for _, i in CASES} == {"ALLOW", "NEEDS_APPROVAL", "DENY"}


def _bundle(fleet: dict[str, str] | None = None) -> engines.Bundle:
    envelope = make_input(deny=("shell.exec",))["envelope"]
    data = {"arm": {"fleet": {"envelopes": {"acme": {"t@1": envelope}}, "tools": {"acme": {"crm.lookup": {"risk": "GREEN"}}}}}}
    return engines.Bundle(library.modules_for(fleet or {}, tests=False), data, "table")


def _engine(kind: str, bundle: engines.Bundle) -> Iterator[engines.Engine]:
    if kind == "embedded":
        embedded = engines.EmbeddedEngine()
        embedded.load(bundle)
        yield embedded
    elif kind == "real-opa":
        require()
        real = goopa.GoOpaEngine()
        real.load(bundle)
        yield real
    else:
        with OpaDouble() as double:
            client = opa.OpaEngine(double.url)
            client.load(bundle)
            yield client


ENGINES = ["embedded", "real-opa", "opa-client"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[engines.Engine]:
    yield from _engine(request.param, _bundle())


@pytest.fixture(params=ENGINES)
def fleet_engine(request: pytest.FixtureRequest) -> Iterator[engines.Engine]:
    yield from _engine(request.param, _bundle(fleet_modules()))


def test_every_engine_gives_the_reference_answer_for_every_case(engine: engines.Engine) -> None:
    wrong = []
    for name, document in CASES:
        want = reference(document)
        got = engine.evaluate(inputs.DECISION_RULE, document)
        if got != want:
            wrong.append((name, got, want))
        # What the reconciler asks for the inputs it builds: the same answer, unchecked.
        if document["instance"] is not None and (unchecked := engine.evaluate(inputs.UNCHECKED_RULE, document)) != want:
            wrong.append((f"{name} (unchecked)", unchecked, want))
    assert wrong == []


def test_every_engine_denies_a_malformed_input_naming_what_is_wrong(engine: engines.Engine) -> None:
    wrong = []
    for name, document, reasons in MALFORMED:
        got = engine.evaluate("data.arm.decision.result", document)
        if got != {"decision": "DENY", "reasons": reasons}:
            wrong.append((name, got, reasons))
    assert wrong == []


def test_every_engine_applies_the_sample_fleets_rules_alike(fleet_engine: engines.Engine) -> None:
    wrong = []
    for name, document, want in FLEET_CASES:
        got = fleet_engine.evaluate(inputs.DECISION_RULE, document)
        if got != want:
            wrong.append((name, got, want))
        if (unchecked := fleet_engine.evaluate(inputs.UNCHECKED_RULE, document)) != want:
            wrong.append((f"{name} (unchecked)", unchecked, want))
    assert wrong == []


def test_every_engine_answers_the_data_api_as_the_embedded_one_does(engine: engines.Engine) -> None:
    reference_engine = engines.EmbeddedEngine()
    reference_engine.load(_bundle())
    answers = [engine.query(path, given) for path, given in QUERIES]
    assert answers == [reference_engine.query(path, given) for path, given in QUERIES]
    by_path = dict(zip([tuple(path) for path, _ in QUERIES], answers, strict=False))
    assert by_path[("arm", "fleet", "envelopes", "acme", "t@1", "tools", "deny", "0")] == {"result": "shell.exec"}
    assert by_path[("arm", "no", "such", "rule")] == {}
    assert by_path[("arm", "decision", "risk_rank", "RED")] == {"result": 2}
    no_input = {"result": {"decision": "DENY", "reasons": ["input is missing or not an object"]}}
    assert answers[1] == {"result": {"decision": "DENY", "reasons": MALFORMED[0][2]}}  # {}
    assert answers[2] == no_input  # no input at all: the Data API's GET, or a body without one
    assert answers[-1]["result"]["arm"]["fleet"] == _bundle().data["arm"]["fleet"]
    # The whole package, every rule of it, for a malformed input: no rule fails on one, and
    # every engine gives every rule the same value.
    for name, document, reasons in MALFORMED:
        package = engine.query(["arm", "decision"], document)
        assert package == reference_engine.query(["arm", "decision"], document), name
        assert package["result"]["result"] == {"decision": "DENY", "reasons": reasons}, name


def test_an_object_keyed_by_an_array_is_answered_as_opa_writes_it(engine: engines.Engine) -> None:
    # OPA writes a key that is not a string as its JSON text; the embedded engine must too.
    keyed = 'package arm.ext.keyed\n\nimport rego.v1\n\nby_pair := {[1, 2]: "a", {"b"}: "c"}\n'
    bundle = engines.Bundle({**_bundle().modules, "fleet/keyed.rego": keyed}, {}, "keyed")
    engine.load(bundle)
    assert engine.query(["arm", "ext", "keyed", "by_pair"], None) == {"result": {"[1,2]": "a", '["b"]': "c"}}
