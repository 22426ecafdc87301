"""Gates as policy: ask the Rego library (``policies/arm/gates.rego``) which steps may be taken.

The planner describes every lifecycle step it would like to take as a gate *step* (see the
input contract at the top of ``gates.rego``) and asks for all of them in one evaluation: one
engine call for a whole plan, whatever its size, instead of one per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reconciler import errors
from reconciler.policy import engines

__all__ = ["RESULTS_RULE", "evaluate"]

RESULTS_RULE = "data.arm.gates.results"


def evaluate(engine: engines.Engine, steps: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Gate result per step id: ``{"allowed": bool, "waiting": [reason], "needsApproval": bool}``."""
    if not steps:
        return {}
    results = engine.evaluate(RESULTS_RULE, {"steps": list(steps)})
    if not isinstance(results, dict):
        raise errors.PolicyError(f"{RESULTS_RULE} is undefined: the gate library is missing or broken")
    missing = [s["id"] for s in steps if s["id"] not in results]
    if missing:
        raise errors.PolicyError(f"{RESULTS_RULE} has no result for {len(missing)} steps (first: {missing[0]})")
    return results
