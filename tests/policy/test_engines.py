"""The embedded engine across threads: each thread evaluates with an engine it built, and every
regorus engine is dropped on the thread that built it (pyo3 panics, as an unraisable error,
when one is dropped elsewhere: pytest reports that as a warning, an error in this module)."""

from __future__ import annotations

import concurrent.futures
import gc
from typing import Any

import pytest

from reconciler import errors
from reconciler.policy import engines

MODULE = """package t

import rego.v1

answer := input.x * 2
"""


pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def loaded(revision: str) -> engines.EmbeddedEngine:
    engine = engines.EmbeddedEngine()
    engine.load(engines.Bundle({"t.rego": MODULE}, {}, revision))
    return engine


def test_an_engine_collected_on_another_thread_drops_nothing_there() -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        engine = loaded("r1")
        assert worker.submit(engine.evaluate, "data.t.answer", {"x": 2}).result() == 4
        assert engine.evaluate("data.t.answer", {"x": 3}) == 6  # and one on this thread
        del engine
        gc.collect()  # here, on the main thread: the worker's regorus engine must not be dropped here
        # The worker drops it itself when it next builds one, and evaluates on as before.
        other = loaded("r2")
        assert worker.submit(other.evaluate, "data.t.answer", {"x": 5}).result() == 10
        assert worker.submit(lambda: len(engines.built_here())).result() == 1


def test_each_thread_builds_its_own_engine_and_a_new_revision_replaces_it() -> None:
    engine = loaded("r1")
    ids: dict[str, Any] = {}

    def evaluate(label: str, x: int) -> int:
        value = engine.evaluate("data.t.answer", {"x": x})
        ids[label] = id(engines.built_here()[-1])
        return value  # type: ignore[no-any-return]

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        assert worker.submit(evaluate, "worker", 1).result() == 2
        assert evaluate("main", 2) == 4
        assert ids["worker"] != ids["main"]  # one engine per thread
        first = ids["main"]
        assert evaluate("main", 3) == 6 and ids["main"] == first  # kept while the revision is the same
        engine.load(engines.Bundle({"t.rego": MODULE.replace("* 2", "* 3")}, {}, "r2"))
        assert evaluate("main", 3) == 9  # the new revision, in a new engine
        assert worker.submit(evaluate, "worker", 3).result() == 9


def test_a_revision_that_does_not_load_leaves_no_engine_in_its_error() -> None:
    engine = loaded("r1")
    broken = engines.Bundle({"t.rego": "package t\n\nanswer := \n"}, {}, "r2")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        failed = worker.submit(engine.load, broken).exception()
    assert isinstance(failed, errors.PolicyError) and "r2 does not load" in str(failed)
    del failed
    gc.collect()  # the error, built on the worker, is dropped here
    assert engine.revision == "r1" and engine.evaluate("data.t.answer", {"x": 1}) == 2


def test_a_query_with_no_input_sees_none_though_the_thread_evaluated_with_one() -> None:
    engine = engines.EmbeddedEngine()
    engine.load(engines.Bundle({"t.rego": MODULE + "\ngiven := input\n"}, {"t": {"limit": 3}}, "r1"))
    assert engine.query(["t", "given"], {"x": 1}) == {"result": {"x": 1}}
    assert engine.query(["t", "given"], None) == {}  # no input: undefined, as in OPA
    assert engine.query(["t"], None) == {"result": {"limit": 3}}
    assert engine.query(["t", "answer"], {"x": 4}) == {"result": 8}
    assert engine.query([], None) == {"result": {"t": {"limit": 3}}}
    assert engine.query(["t", "nothing"], {}) == {}


def test_a_query_that_fails_on_a_worker_leaves_no_engine_in_its_error() -> None:
    engine = engines.EmbeddedEngine()
    engine.load(engines.Bundle({"t.rego": 'package t\n\nimport rego.v1\n\nboom := to_number("many")\n'}, {}, "r1"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        failed = [worker.submit(engine.query, ["t", "boom"], given).exception() for given in (None, {})]
    assert all(isinstance(e, errors.PolicyError) and 'data["t"]["boom"]' in str(e) for e in failed)
    del failed
    gc.collect()  # the errors, raised on the worker, are dropped here
