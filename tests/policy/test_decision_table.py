"""One decision table, every engine: embedded regorus, OPA through opa-python-client, real OPA.

The table is ~170 cases: hand-written rows that pin the semantics, plus generated combinations
of instance state, tool flags, risk, envelope limits, spend, repeats and approvals. Each case's
expected answer comes from a small reference model of the documented rules (below), written
independently of the Rego; every engine must give exactly that answer. Malformed inputs (a field
the decision reads missing or of the wrong type) are rows of their own, each denied with the
reason that names the field; and every engine answers the Data API's queries alike. The OPA engine runs
against the project's OPA-protocol test double (no OPA binary can be installed here), and
against a real ``opa`` too when one is on PATH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler import errors
from reconciler.policy import engines, inputs, library, opa
from tests.policy.decision_cases import CASES, MALFORMED, PINNED, QUERIES, make_input, reference
from tests.policy.opa_double import OpaDouble


def test_the_reference_agrees_with_the_pinned_rows() -> None:
    assert [reference(make_input(**kw))["decision"] for _, kw, _ in PINNED] == [expected for _, _, expected in PINNED]
    assert len(CASES) >= 100
    assert {reference(i)["decision"] for _, i in CASES} == {"ALLOW", "NEEDS_APPROVAL", "DENY"}


def _bundle() -> engines.Bundle:
    envelope = make_input(deny=("shell.exec",))["envelope"]
    data = {"arm": {"fleet": {"envelopes": {"acme": {"t@1": envelope}}, "tools": {"acme": {"crm.lookup": {"risk": "GREEN"}}}}}}
    return engines.Bundle(library.modules_for({}, tests=False), data, "table")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _engines() -> Iterator[Any]:
    yield pytest.param("embedded", id="embedded")
    yield pytest.param("opa-client", id="opa-client-against-test-double")
    yield pytest.param(
        "real-opa",
        id="real-opa",
        marks=pytest.mark.skipif(
            shutil.which("opa") is None, reason="no opa binary on PATH (none can be installed from this project's registries)"
        ),
    )


@pytest.fixture(params=list(_engines()))
def engine(request: pytest.FixtureRequest) -> Iterator[engines.Engine]:
    kind = request.param
    if kind == "embedded":
        embedded = engines.EmbeddedEngine()
        embedded.load(_bundle())
        yield embedded
    elif kind == "opa-client":
        with OpaDouble() as double:
            client = opa.OpaEngine(double.url)
            client.load(_bundle())
            yield client
    else:
        port = _free_port()
        proc = subprocess.Popen(
            ["opa", "run", "--server", "--addr", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            real = opa.OpaEngine(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 15
            while True:
                try:
                    real.load(_bundle())
                    break
                except errors.PolicyError:  # the server is still starting
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield real
        finally:
            proc.terminate()
            proc.wait(timeout=10)


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


def test_every_engine_answers_the_data_api_as_the_embedded_one_does(engine: engines.Engine) -> None:
    reference_engine = engines.EmbeddedEngine()
    reference_engine.load(_bundle())
    answers = [engine.query(path, given) for path, given in QUERIES]
    assert answers == [reference_engine.query(path, given) for path, given in QUERIES]
    by_path = dict(zip([tuple(path) for path, _ in QUERIES], answers, strict=False))
    assert by_path[("arm", "fleet", "envelopes", "acme", "t@1", "tools", "deny", "0")] == {"result": "shell.exec"}
    assert by_path[("arm", "no", "such", "rule")] == {}
    assert by_path[("arm", "decision", "risk_rank", "RED")] == {"result": 2}
    assert answers[2] == {"result": {"decision": "DENY", "reasons": ["input is missing or not an object"]}}
    assert answers[-1]["result"]["arm"]["fleet"] == _bundle().data["arm"]["fleet"]
    # The whole package, every rule of it, for a malformed input: no rule fails on one.
    for name, document, reasons in MALFORMED:
        package = engine.query(["arm", "decision"], document)
        assert package == reference_engine.query(["arm", "decision"], document), name
        assert package["result"]["result"] == {"decision": "DENY", "reasons": reasons}, name
