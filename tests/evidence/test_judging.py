"""Gate outcomes as a table: a version's recorded runs judged against its suite, by category,
baseline and sample count, with the sentence a waiting step shows. Pure: no Git, no database."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.desired import documents, models
from reconciler.evidence import judging
from reconciler.state import actual as actual_

HASH = "sha256:" + "a" * 64
PARENT_HASH = "sha256:" + "b" * 64


def suite(category: str, *metrics: dict[str, Any], min_samples: int = 100, **more: Any) -> dict[str, Any]:
    """A suite's facts, built through the real model (defaults filled, units resolved)."""
    spec = models.EvaluationSuiteSpec.model_validate(
        {"category": category, "metrics": list(metrics), "minSamples": min_samples, "appliesTo": {"templates": ["app"]}, **more}
    )
    return documents.suite_facts(spec)


def run(id_: int, samples: int = 500, genome: str = HASH, suite_: str = "s", **metrics: float) -> actual_.RunRow:
    return actual_.RunRow(id_, suite_, genome, metrics, samples)


SAFETY = suite("safety", {"name": "refusal_rate", "threshold": 1.0})
CAPABILITY = suite(
    "capability", {"name": "accuracy", "threshold": 0.9}, {"name": "p95_seconds", "threshold": 30, "direction": "lower"}
)
REGRESSION = suite("regression", {"name": "resolution", "threshold": 0.8}, maxRegression=0.02)
SIGNIFICANT = suite("capability", {"name": "pass_rate", "threshold": 0.9, "significance": True})


@dataclasses.dataclass
class Row:
    facts: dict[str, Any]
    runs: list[actual_.RunRow]
    status: str
    summary: str
    parent_runs: list[actual_.RunRow] = dataclasses.field(default_factory=list)
    parent: str | None = None


ROWS = {
    "safety: no run is missing": Row(SAFETY, [], "missing", f"safety suite s has no run on {HASH}"),
    "safety: 97% of a 100% bar fails, in the waiting step's words": Row(
        SAFETY, [run(1, refusal_rate=0.97)], "failing", f"safety suite s scored 97.0% (needs 100%) on {HASH}"
    ),
    "safety: every case refused passes": Row(SAFETY, [run(1, refusal_rate=1.0)], "passing", f"safety suite s passed in run 1 on {HASH}"),
    "safety: the latest run decides, a later failure included": Row(
        SAFETY, [run(1, refusal_rate=1.0), run(2, refusal_rate=0.99)], "failing", f"safety suite s scored 99.0% (needs 100%) on {HASH}"
    ),
    "safety: a later pass clears an earlier failure": Row(
        SAFETY, [run(1, refusal_rate=0.5), run(2, refusal_rate=1.0)], "passing", f"safety suite s passed in run 2 on {HASH}"
    ),
    "samples: fewer than minSamples counts as missing": Row(
        SAFETY, [run(1, samples=99, refusal_rate=1.0)], "missing",
        f"safety suite s has no run with at least 100 samples on {HASH} (run 1 had 99)",
    ),
    "samples: a small run after a large failing one changes nothing": Row(
        SAFETY, [run(1, refusal_rate=0.9), run(2, samples=5, refusal_rate=1.0)], "failing",
        f"safety suite s scored 90.0% (needs 100%) on {HASH}",
    ),
    "samples: exactly minSamples counts": Row(SAFETY, [run(1, samples=100, refusal_rate=1.0)], "passing", f"safety suite s passed in run 1 on {HASH}"),
    "genome: a run of another genome is no evidence": Row(
        SAFETY, [run(1, genome=PARENT_HASH, refusal_rate=1.0)], "missing", f"safety suite s has no run on {HASH}"
    ),
    "capability: each metric by its direction; only the failing one is named": Row(
        CAPABILITY, [run(1, accuracy=0.95, p95_seconds=41.5)], "failing",
        f"capability suite s scored p95_seconds 41.5 (needs at most 30) on {HASH}",
    ),
    "capability: at the threshold passes (a number, lower is better)": Row(
        CAPABILITY, [run(1, accuracy=0.9, p95_seconds=30)], "passing", f"capability suite s passed in run 1 on {HASH}"
    ),
    "capability: a metric the run lacks fails": Row(
        CAPABILITY, [run(1, accuracy=0.95)], "failing", f"capability suite s: run 1 reports no p95_seconds on {HASH}"
    ),
    "significance: 0.92 over 500 samples has a Wilson lower bound under 0.9": Row(
        SIGNIFICANT, [run(1, samples=500, pass_rate=0.92)], "failing",
        f"capability suite s scored 92.0% (Wilson lower bound 89.3% over 500 samples; needs 90%) on {HASH}",
    ),
    "significance: 0.92 over 5,000 samples clears it": Row(
        SIGNIFICANT, [run(1, samples=5000, pass_rate=0.92)], "passing", f"capability suite s passed in run 1 on {HASH}"
    ),
    "regression: a first version has no baseline to regress from": Row(
        REGRESSION, [run(1, resolution=0.85)], "passing", f"regression suite s passed in run 1 on {HASH}"
    ),
    "regression: within maxRegression of the parent's passing run": Row(
        REGRESSION, [run(3, resolution=0.89)], "passing", f"regression suite s passed in run 3 on {HASH}",
        parent_runs=[run(1, genome=PARENT_HASH, resolution=0.91)], parent="app@1.0.0",
    ),
    "regression: a drop past maxRegression fails, with both numbers": Row(
        REGRESSION, [run(3, resolution=0.85)], "failing",
        f"regression suite s scored 85.0% against 91.0% for app@1.0.0 (run 1), a drop of 6.0 points "
        f"(at most 2.0 points allowed) on {HASH}",
        parent_runs=[run(1, genome=PARENT_HASH, resolution=0.91)], parent="app@1.0.0",
    ),
    "regression: the baseline is the parent's latest passing run, not its latest": Row(
        REGRESSION, [run(4, resolution=0.86)], "passing", f"regression suite s passed in run 4 on {HASH}",
        parent_runs=[run(1, genome=PARENT_HASH, resolution=0.87), run(2, genome=PARENT_HASH, resolution=0.5)],
        parent="app@1.0.0",
    ),
    "regression: a parent without a passing run leaves no baseline: missing": Row(
        REGRESSION, [run(3, resolution=0.95)], "missing", "regression suite s has no baseline: parent app@1.0.0 has no passing run of it",
        parent_runs=[run(1, genome=PARENT_HASH, resolution=0.5)], parent="app@1.0.0",
    ),
    "regression: the threshold still holds whatever the baseline": Row(
        REGRESSION, [run(3, resolution=0.7)], "failing", f"regression suite s scored 70.0% (needs 80%) on {HASH}",
        parent_runs=[run(1, genome=PARENT_HASH, resolution=0.71)], parent="app@1.0.0",
    ),
}  # fmt: skip


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_a_suite_judges_recorded_runs(row: Row) -> None:
    verdict = judging.judge(
        "s",
        row.facts,
        HASH,
        row.runs,
        parent=row.parent,
        parent_hash=PARENT_HASH if row.parent else None,
        parent_runs=row.parent_runs,
    )
    assert (verdict.status, verdict.summary) == (row.status, row.summary)


def test_a_regression_verdict_shows_the_baseline_it_compared_with() -> None:
    verdict = judging.judge(
        "s", REGRESSION, HASH, [run(3, resolution=0.9)], parent="app@1.0.0", parent_hash=PARENT_HASH,
        parent_runs=[run(1, genome=PARENT_HASH, resolution=0.91)],
    )  # fmt: skip
    assert verdict.baseline == {"version": "app@1.0.0", "run": 1, "metrics": {"resolution": 0.91}}
    (value,) = verdict.values
    assert value["baseline"] == 0.91 and value["passes"] is True
    assert value["regression"] == pytest.approx(0.01)


def test_the_wilson_interval_matches_its_textbook_values() -> None:
    low, high = judging.wilson(0.5, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert judging.wilson(1.0, 200)[0] == pytest.approx(0.98116, abs=1e-5)
    assert judging.wilson(0.0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("value", "unit", "exact", "shown"),
    [(0.97, "rate", False, "97.0%"), (1.0, "rate", True, "100%"), (0.975, "rate", True, "97.5%"), (30.0, "number", False, "30"),
     (41.25, "number", False, "41.25")],
)  # fmt: skip
def test_values_are_formatted_for_people(value: float, unit: str, exact: bool, shown: str) -> None:
    assert judging.format_value(value, unit, exact=exact) == shown


@pytest.mark.parametrize(
    ("scope", "template", "labels", "applies"),
    [
        ({"templates": ["app"]}, "app", {}, True),
        ({"templates": ["app"]}, "other", {}, False),
        ({"selector": {"labels": {"team": "support"}}}, "x", {"team": "support", "tier": "1"}, True),
        ({"selector": {"labels": {"team": "support"}}}, "x", {"team": "sales"}, False),
    ],
)
def test_a_suite_applies_to_named_or_selected_templates(
    scope: dict[str, Any], template: str, labels: dict[str, str], applies: bool
) -> None:
    facts = suite("safety", {"name": "m", "threshold": 1.0}, appliesTo=scope)
    assert judging.applies(facts, template, labels) is applies


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_the_planners_quick_judgement_agrees_with_the_detailed_one(row: Row) -> None:
    parent = {"parent": row.parent, "parent_hash": PARENT_HASH if row.parent else None, "parent_runs": row.parent_runs}
    quick = judging.judge("s", row.facts, HASH, row.runs, detail=False, **parent)  # type: ignore[arg-type]
    assert quick.status == row.status
    if quick.status != "passing":  # a waiting step shows the same sentence
        assert quick.summary == row.summary
