"""Gates as policy: ask the Rego library (``policies/arm/gates.rego``) which steps may be taken.

The planner describes every lifecycle step it would like to take as a gate *step* (see the
input contract at the top of ``gates.rego``) and asks for all of them in one evaluation: one
engine call for a whole plan, whatever its size, instead of one per step.

Each evaluation is given the score and threshold as the reasons print them (``shown``:
``28.5%``), written here: Rego engines multiply and round fractions differently, so a score
printed by the policy would read 28% on one engine and 29% on another.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler import errors
from reconciler.policy import engines

__all__ = ["RESULTS_RULE", "evaluate", "percent"]

RESULTS_RULE = "data.arm.gates.results"


def evaluate(engine: engines.Engine, steps: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Gate result per step id: ``{"allowed": bool, "waiting": [reason], "needsApproval": bool}``."""
    if not steps:
        return {}
    results = engine.evaluate(RESULTS_RULE, {"steps": [_shown(step) for step in steps]})
    if not isinstance(results, dict):
        raise errors.PolicyError(f"{RESULTS_RULE} is undefined: the gate library is missing or broken")
    missing = [s["id"] for s in steps if s["id"] not in results]
    if missing:
        raise errors.PolicyError(f"{RESULTS_RULE} has no result for {len(missing)} steps (first: {missing[0]})")
    return results


def percent(score: float) -> str:
    """A score of 0..1 as a percentage, to two decimals at most, from the decimal it was written
    as (half up): 0.5 is ``50%``, 0.285 is ``28.5%``, 0.123456 is ``12.35%``."""
    value = (decimal.Decimal(repr(score)) * 100).quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_UP)
    return f"{value.normalize():f}%"


def _shown(step: Mapping[str, Any]) -> Mapping[str, Any]:
    version = step.get("version")
    if not isinstance(version, Mapping) or not version.get("evaluations"):
        return step
    evaluations = version["evaluations"]
    shown = [
        {**e, "shown": {"score": percent(e["score"]), "threshold": percent(e["threshold"])}}
        if all(isinstance(e.get(k), int | float) and not isinstance(e.get(k), bool) for k in ("score", "threshold"))
        else e
        for e in evaluations
    ]
    return {**step, "version": {**version, "evaluations": shown}}
