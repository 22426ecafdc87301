"""A decision's input and its reading: what the Rego entry point ``data.arm.decision.result``
is asked, and what its answer means. Pure: the service that resolves instances, counts costs and
records decisions (``decisions.deciding``) builds a :class:`Context` and calls these.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from reconciler import errors
from reconciler.desired import genome
from reconciler.policy import engines, risk

__all__ = ["DECISION_RULE", "MAX_COST", "UNCHECKED_RULE", "Context", "Outcome", "build_input", "call_key", "evaluate"]

DECISION_RULE = "data.arm.decision.result"
#: The same decision for an input known to be well formed, without checking it (~25 µs less):
#: what :func:`evaluate` asks for the inputs :func:`build_input` makes, which are well formed by
#: construction. An unknown instance's goes to DECISION_RULE, so its reasons are every engine's.
UNCHECKED_RULE = "data.arm.decision.unchecked"
DECISIONS = ("ALLOW", "NEEDS_APPROVAL", "DENY")

#: The largest cost a call may estimate or a cost tick may report: far past any one call's cost,
#: and sums of such stay inside what the policy's money arithmetic handles exactly (~9e16).
MAX_COST = 1e9


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Context:
    """Everything known about the caller and the tool, resolved from the applied commit."""

    instance: Mapping[str, Any] | None  # {"id", "state", "tenant", "template", "version"}
    environment: Mapping[str, Any]  # {"name", "production"}
    tool: Mapping[str, Any] | None  # the catalog entry, None when the tool is not in the catalog
    envelope: Mapping[str, Any]  # the version's effective envelope
    spent_run: float = 0.0
    spent_day: float = 0.0
    same_calls: int = 0
    approval_granted: bool = False


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Outcome:
    decision: str
    reasons: list[str]
    risk: risk.Assessment


def call_key(tool: str, args: Mapping[str, Any]) -> str:
    """Identity of a call (tool and arguments) for loop detection and one-shot approvals."""
    return hashlib.sha256(tool.encode() + b"\0" + genome.canonical_json(dict(args))).hexdigest()[:32]


def build_input(
    context: Context, tool: str, args: Mapping[str, Any], cost_estimate: float
) -> tuple[dict[str, Any], risk.Assessment]:
    entry = context.tool
    catalog_level = entry["risk"] if entry else "RED"
    assessment = risk.assess(
        catalog_level,
        args,
        production=bool(context.environment.get("production")),
        production_impact=bool(entry and entry.get("productionImpact")),
    )
    # The documents are only read (serialised for the engine): shared dicts are not copied.
    document = {
        "instance": _plain(context.instance) if context.instance is not None else None,
        "environment": _plain(context.environment),
        "tool": {
            "name": tool,
            "known": entry is not None,
            "risk": catalog_level,
            "writes": bool(entry and entry.get("writes")),
            "external": bool(entry and entry.get("external")),
            "productionImpact": bool(entry and entry.get("productionImpact")),
        },
        "risk": assessment.as_dict(),
        "args": _plain(args),
        "envelope": _plain(context.envelope),
        "cost": {"estimate": float(cost_estimate), "run": context.spent_run, "day": context.spent_day},
        "loop": {"count": context.same_calls},
        "approval": {"granted": context.approval_granted},
    }
    return document, assessment


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    return value if type(value) is dict else dict(value)


def evaluate(engine: engines.Engine, document: Mapping[str, Any], assessment: risk.Assessment) -> Outcome:
    """The decision on ``document``, made by :func:`build_input`."""
    rule = UNCHECKED_RULE if document["instance"] is not None else DECISION_RULE
    result = engine.evaluate(rule, document)
    if not isinstance(result, dict) or result.get("decision") not in DECISIONS:
        raise errors.PolicyError(f"{rule} gave no decision ({result!r}): the decision library is missing or broken")
    return Outcome(result["decision"], [str(r) for r in result.get("reasons", [])], assessment)
