"""Judging evaluation runs against their suite: missing, passing or failing, and why. Pure.

One function, :func:`judge`, says what a version's recorded runs of one EvaluationSuite amount
to; the gates (through the planner, ``reconcile.evidencing``), the version scorecard
(``evidence.scorecards``) and a run's submission (``evidence.recording``, for continuous
evaluation) all ask it, so the three never disagree. The rules:

- Only runs recorded against the version's genome hash count, and only those with at least the
  suite's ``minSamples``: fewer counts as missing. Of those, the latest decides.
- Each metric must clear its threshold (``direction`` higher: at least, lower: at most). A rate
  with ``significance`` is judged by the conservative end of its 95% Wilson interval over the
  run's samples (the lower bound when higher is better, the upper bound when lower is).
- A regression suite also compares each metric with its baseline: the parent version's latest
  run of the suite that clears every threshold (with enough samples). A metric may be worse than
  the baseline by at most ``maxRegression`` (in the metric's unit). A version with a parent whose
  runs give no baseline is missing evidence; a version without a parent has nothing to regress
  from and is judged by the thresholds alone.

Numbers in summaries are formatted here, never in Rego: engines format floats differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

__all__ = ["Run", "Verdict", "applies", "format_value", "judge", "required_for", "wilson"]

Status = Literal["missing", "passing", "failing"]

#: z of a two-sided 95% interval.
Z95 = 1.959963984540054
#: Comparisons forgive this much float noise (0.91 - 0.02 is 0.8900000000000001).
_SLACK = 1e-9


class Run(Protocol):
    """What a judgement reads of a recorded run (``state.actual.RunRow`` is one)."""

    @property
    def id(self) -> int: ...
    @property
    def suite(self) -> str: ...
    @property
    def genome_hash(self) -> str: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...
    @property
    def samples(self) -> int: ...


class Verdict(NamedTuple):
    """What a version's runs of one suite amount to. ``summary`` says it in one sentence,
    numbers included (``safety suite jailbreak-v2 scored 97.0% (needs 100%) on sha256:…``).
    A named tuple: a plan makes one per version and suite."""

    suite: str
    category: str
    status: Status
    summary: str
    run: int | None = None  # the run that decided, if any
    samples: int | None = None
    values: tuple[dict[str, Any], ...] = ()  # per metric: value, effective, threshold, direction, passes, ...
    baseline: dict[str, Any] | None = None  # regression: {version, run, metrics}

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "category": self.category,
            "status": self.status,
            "summary": self.summary,
            "run": self.run,
            "samples": self.samples,
            "values": list(self.values),
            "baseline": self.baseline,
        }


def applies(suite: Mapping[str, Any], template: str, labels: Mapping[str, str]) -> bool:
    """Whether a suite (its facts, ``desired.documents.suite_facts``) applies to a template."""
    scope = suite["appliesTo"]
    if scope["templates"] is not None:
        return template in scope["templates"]
    wanted: Mapping[str, str] = scope["labels"] or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def required_for(suite: Mapping[str, Any], step: str | None = None, environment: str | None = None) -> bool:
    """Whether a suite's evidence is required for a lifecycle step (``TESTING->CANDIDATE``) or
    for admission to an environment."""
    required = suite["requiredFor"]
    return (step is not None and step in required["steps"]) or (
        environment is not None and environment in required["environments"]
    )


def wilson(rate: float, samples: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a pass rate observed over ``samples`` trials."""
    if samples <= 0:
        return 0.0, 1.0
    n = float(samples)
    z2 = Z95 * Z95
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    margin = Z95 * math.sqrt(max(rate * (1 - rate) / n + z2 / (4 * n * n), 0.0)) / (1 + z2 / n)
    return max(0.0, centre - margin), min(1.0, centre + margin)


def format_value(value: float, unit: str, *, exact: bool = False) -> str:
    """A metric value as people read it: a rate as a percentage (``97.0%``; ``exact``, for
    thresholds: no trailing zeros, ``100%``), a number as it is (``2300``, ``0.25``)."""
    if unit == "rate":
        text = f"{value * 100:.1f}"
        if exact:
            text = text.rstrip("0").rstrip(".") if "." in text else text
        return f"{text}%"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _points(value: float, unit: str) -> str:
    """A difference of two values of ``unit``: percentage points for rates."""
    return f"{value * 100:.1f} points" if unit == "rate" else format_value(value, unit)


def _clears(value: float, threshold: float, direction: str) -> bool:
    slack = _SLACK * max(1.0, abs(threshold))
    return value >= threshold - slack if direction == "higher" else value <= threshold + slack


def _effective(metric: Mapping[str, Any], value: float, samples: int) -> float:
    if not metric["significance"]:
        return value
    low, high = wilson(min(max(value, 0.0), 1.0), samples)
    return low if metric["direction"] == "higher" else high


def _candidates(runs: Iterable[Run], suite: str, genome_hash: str) -> list[Run]:
    return [r for r in runs if r.suite == suite and r.genome_hash == genome_hash]


def _passes(facts: Mapping[str, Any], run: Run) -> bool:
    """Whether ``run`` clears every threshold of its suite: ``_threshold_results`` without the
    detail, for the judgements that pass (nearly all of those a plan makes)."""
    metrics = run.metrics
    for metric in facts["metrics"]:
        value = metrics.get(metric["name"])
        if value is None:
            return False
        if metric["significance"]:
            value = _effective(metric, value, run.samples)
        threshold = metric["threshold"]
        slack = _SLACK * max(1.0, abs(threshold))
        if (value < threshold - slack) if metric["direction"] == "higher" else (value > threshold + slack):
            return False
    return True


def _within_baseline(facts: Mapping[str, Any], run: Run, base: Run) -> bool:
    allowed = float(facts["maxRegression"])
    metrics, before = run.metrics, base.metrics
    for metric in facts["metrics"]:
        name = metric["name"]
        value, reference = metrics[name], float(before.get(name, metrics[name]))
        change = (reference - value) if metric["direction"] == "higher" else (value - reference)
        if change > allowed + _SLACK * max(1.0, abs(reference)):
            return False
    return True


def _threshold_results(facts: Mapping[str, Any], run: Run) -> list[dict[str, Any]]:
    results = []
    for metric in facts["metrics"]:
        name = metric["name"]
        raw = run.metrics.get(name)
        entry: dict[str, Any] = {
            "metric": name,
            "unit": metric["unit"],
            "direction": metric["direction"],
            "threshold": metric["threshold"],
            "value": raw,
        }
        if raw is None:
            entry |= {"effective": None, "passes": False}
        else:
            effective = _effective(metric, raw, run.samples)
            entry |= {"effective": effective, "passes": _clears(effective, metric["threshold"], metric["direction"])}
        results.append(entry)
    return results


def _latest_qualifying(facts: Mapping[str, Any], runs: Sequence[Run]) -> tuple[Run | None, Run | None]:
    """(the latest run with enough samples, the latest run at all)."""
    enough = [r for r in runs if r.samples >= facts["minSamples"]]
    return (enough[-1] if enough else None), (runs[-1] if runs else None)


def baseline_run(facts: Mapping[str, Any], suite: str, genome_hash: str, runs: Iterable[Run]) -> Run | None:
    """The latest run of ``suite`` on ``genome_hash`` that clears every threshold with enough
    samples: what a child version's regression is measured against."""
    for run in reversed(_candidates(runs, suite, genome_hash)):
        if run.samples >= facts["minSamples"] and _passes(facts, run):
            return run
    return None


def _quick(
    suite: str,
    facts: Mapping[str, Any],
    genome_hash: str,
    runs: Iterable[Run],
    parent: str | None,
    parent_hash: str | None,
    parent_runs: Iterable[Run],
) -> Verdict | None:
    """A passing verdict, found the short way (no values, no summary); None when the runs do
    not pass, for ``judge`` to say why in full."""
    needs = facts["minSamples"]
    qualifying = None
    for run in reversed(runs if isinstance(runs, list) else list(runs)):
        if run.suite == suite and run.genome_hash == genome_hash and run.samples >= needs:
            qualifying = run
            break
    if qualifying is None or not _passes(facts, qualifying):
        return None
    if facts["category"] == "regression" and parent is not None:
        base = baseline_run(facts, suite, parent_hash, parent_runs) if parent_hash else None
        if base is None or not _within_baseline(facts, qualifying, base):
            return None
    return Verdict(suite, facts["category"], "passing", "", qualifying.id, qualifying.samples)


def judge(
    suite: str,
    facts: Mapping[str, Any],
    genome_hash: str,
    runs: Iterable[Run],
    *,
    parent: str | None = None,
    parent_hash: str | None = None,
    parent_runs: Iterable[Run] = (),
    detail: bool = True,
) -> Verdict:
    """The verdict of a version's ``runs`` (any suites: only ``suite`` on ``genome_hash`` count)
    against ``suite``'s ``facts``; ``parent`` and its runs give a regression suite its baseline.
    Without ``detail`` (the planner) a passing verdict comes without values or summary."""
    category = facts["category"]
    if not detail:
        quick = _quick(suite, facts, genome_hash, runs, parent, parent_hash, parent_runs)
        if quick is not None:
            return quick
    qualifying, latest = _latest_qualifying(facts, _candidates(runs, suite, genome_hash))
    what = f"{category} suite {suite}"
    on = f"on {genome_hash}"
    if qualifying is None:
        if latest is None:
            return Verdict(suite, category, "missing", f"{what} has no run {on}")
        needs = facts["minSamples"]
        return Verdict(
            suite, category, "missing",
            f"{what} has no run with at least {needs} samples {on} (run {latest.id} had {latest.samples})",
        )  # fmt: skip
    run = qualifying
    results = _threshold_results(facts, run)
    values = tuple(results)
    missing = [r["metric"] for r in results if r["value"] is None]
    if missing:
        summary = f"{what}: run {run.id} reports no {', '.join(missing)} {on}"
        return Verdict(suite, category, "failing", summary, run.id, run.samples, values)
    failed = [r for r in results if not r["passes"]]
    if failed:
        single = len(results) == 1
        parts = [_shortfall(r, run.samples, named=not single) for r in failed]
        return Verdict(suite, category, "failing", f"{what} scored {', '.join(parts)} {on}", run.id, run.samples, values)
    baseline: dict[str, Any] | None = None
    if category == "regression" and parent is not None:
        base = baseline_run(facts, suite, parent_hash or "", parent_runs) if parent_hash else None
        if base is None:
            return Verdict(
                suite, category, "missing",
                f"{what} has no baseline: parent {parent} has no passing run of it", run.id, run.samples, values,
            )  # fmt: skip
        baseline = {"version": parent, "run": base.id, "metrics": dict(base.metrics)}
        drops = []
        allowed = float(facts["maxRegression"])
        compared = []
        for r in results:
            before = float(base.metrics.get(r["metric"], r["value"]))
            change = (before - r["value"]) if r["direction"] == "higher" else (r["value"] - before)
            within = change <= allowed + _SLACK * max(1.0, abs(before))
            compared.append(r | {"baseline": before, "regression": change, "passes": within})
            if not within:
                drops.append((r, before, change))
        values = tuple(compared)
        if drops:
            single = len(results) == 1
            parts = []
            for r, before, change in drops:
                unit = r["unit"]
                name = f"{r['metric']} " if not single else ""
                parts.append(
                    f"{name}{format_value(r['value'], unit)} against {format_value(before, unit)} for {parent} (run {base.id}), "
                    f"{'a drop' if r['direction'] == 'higher' else 'a rise'} of {_points(change, unit)} "
                    f"(at most {_points(allowed, unit)} allowed)"
                )
            summary = f"{what} scored {'; '.join(parts)} {on}"
            return Verdict(suite, category, "failing", summary, run.id, run.samples, values, baseline)
    return Verdict(suite, category, "passing", f"{what} passed in run {run.id} {on}", run.id, run.samples, values, baseline)


def _shortfall(result: Mapping[str, Any], samples: int, *, named: bool) -> str:
    unit = result["unit"]
    threshold = format_value(result["threshold"], unit, exact=True)
    needs = f"needs {threshold}" if result["direction"] == "higher" else f"needs at most {threshold}"
    value = format_value(result["value"], unit)
    if result["effective"] != result["value"]:
        bound = "lower" if result["direction"] == "higher" else "upper"
        needs = f"Wilson {bound} bound {format_value(result['effective'], unit)} over {samples} samples; {needs}"
    return f"{result['metric'] + ' ' if named else ''}{value} ({needs})"
