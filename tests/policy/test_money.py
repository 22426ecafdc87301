"""Money in micro-units: amounts turned into whole numbers once, and written the way the Rego
library writes them, byte for byte, on both engines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler import money
from reconciler.policy import engines, goopa, library
from tests.realopa import require


def test_amounts_become_the_micro_units_that_were_written() -> None:
    assert [money.micros(x) for x in (0, 0.35, 1.15, 1.1500000000000001, 1.005, 0.02, 2.74, 0.24, 1e9)] == [
        0, 350_000, 1_150_000, 1_150_000, 1_005_000, 20_000, 2_740_000, 240_000, 10**15,
    ]  # fmt: skip
    assert money.micros(0.02) + money.micros(2.74) + money.micros(0.24) == money.micros(3.0)  # 3.0000000000000004 in doubles
    assert money.micros(0.0000004) == 0 and money.micros(0.0000006) == 1  # to the nearest micro-unit
    assert money.capped(2**60) == money.MAX_MICROS == 2**53 - 1


def test_amounts_are_written_from_their_digits() -> None:
    assert [money.text(x) for x in (0, 1, 10_000, 1_005_000, 1_500_000, 1_234_567, 2**53 - 1)] == [
        "0.00", "0.000001", "0.01", "1.005", "1.50", "1.234567", "9007199254.740991",
    ]  # fmt: skip


@pytest.fixture(params=["embedded", "real-opa"])
def engine(request: pytest.FixtureRequest) -> Iterator[engines.Engine]:
    loaded: engines.Engine
    if request.param == "real-opa":
        require()
        loaded = goopa.GoOpaEngine()
    else:
        loaded = engines.EmbeddedEngine()
    probe = "package arm.probe\n\nimport rego.v1\n\nwritten := [data.arm.decision.money(x) | some x in input.amounts]\n"
    loaded.load(engines.Bundle({**library.modules_for({}, tests=False), "probe.rego": probe}, {}, "money"))
    yield loaded


def test_the_library_writes_money_as_the_reconciler_does(engine: engines.Engine) -> None:
    amounts = [0, 1, 9, 10, 99, 100, 999_999, 1_000_000, 1_000_001, 1_010_000, 123_456_789, 10**15, 2**53 - 1]
    amounts += [7**n for n in range(1, 19)]
    written = engine.evaluate("data.arm.probe.written", {"amounts": amounts})
    assert written == [money.text(x) for x in amounts]
