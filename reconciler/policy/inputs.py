"""A decision's input and its reading: what the Rego entry point ``data.arm.decision.result``
is asked, and what its answer means. Pure: the service that resolves instances, counts costs and
records decisions (``decisions.deciding``) builds a :class:`Context` and calls these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from reconciler import errors, money
from reconciler.desired import genome
from reconciler.policy import engines, envelopes, risk

__all__ = [
    "DECISION_RULE",
    "MAX_COST",
    "MAX_EXACT_INTEGER",
    "UNCHECKED_RULE",
    "Context",
    "Outcome",
    "build_input",
    "call_key",
    "evaluate",
    "number_problem",
]

DECISION_RULE = "data.arm.decision.result"
#: The same decision for an input known to be well formed, without checking it (~25 µs less):
#: what :func:`evaluate` asks for the inputs :func:`build_input` makes, which are well formed by
#: construction. An unknown instance's goes to DECISION_RULE, so its reasons are every engine's.
UNCHECKED_RULE = "data.arm.decision.unchecked"
DECISIONS = ("ALLOW", "NEEDS_APPROVAL", "DENY")

#: The largest cost a call may estimate or a cost tick may report (currency units): far past any
#: one call's cost; in micro-units (10^15) well inside what every engine holds exactly.
MAX_COST = money.MAX_AMOUNT

#: The largest integer every engine and every JSON reader holds exactly: 2^53 - 1 (RFC 7493).
MAX_EXACT_INTEGER = 2**53 - 1


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Context:
    """Everything known about the caller and the tool, resolved from the applied commit."""

    instance: Mapping[str, Any] | None  # {"id", "state", "tenant", "template", "version"}
    environment: Mapping[str, Any]  # {"name", "production"}
    tool: Mapping[str, Any] | None  # the catalog entry, None when the tool is not in the catalog
    envelope: Mapping[str, Any]  # the version's effective envelope
    spent_run: int = 0  # micro-units
    spent_day: int = 0  # micro-units
    same_calls: int = 0
    approval_granted: bool = False
    #: ``envelope`` as the policy reads it (envelopes.for_policy); built here when not given
    policy_envelope: Mapping[str, Any] | None = None


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
    context: Context,
    tool: str,
    args: Mapping[str, Any],
    cost_estimate: float,
    findings: tuple[str | None, str | None, str | None, str | None] | None = None,
) -> tuple[dict[str, Any], risk.Assessment]:
    """The decision input and the call's risk. ``findings``: what the arguments were found to show
    when the call was first decided (a replay: the stored arguments are redacted), instead of
    assessing ``args`` now; the catalog entry and the environment are read as now either way."""
    entry = context.tool
    catalog_level = entry["risk"] if entry else "RED"
    production = bool(context.environment.get("production"))
    production_impact = bool(entry and entry.get("productionImpact"))
    if findings is None:
        assessment = risk.assess(catalog_level, args, production=production, production_impact=production_impact)
    else:
        assessment = risk.reassess(catalog_level, findings, production=production, production_impact=production_impact)
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
        "envelope": _plain(context.policy_envelope or envelopes.for_policy(context.envelope)),
        "cost": {
            "estimate": money.micros(cost_estimate),
            "run": money.capped(context.spent_run),
            "day": money.capped(context.spent_day),
        },
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


def number_problem(value: Any, where: str) -> tuple[list[str | int], str] | None:
    """The first number in ``value`` (a parsed JSON document, ``where`` its name: ``input``,
    ``args``) that engines do not read alike, as (its path, what is wrong), else None.

    NaN and ±Infinity are no JSON numbers, and a number past a double's range parses as
    Infinity: an engine refuses them, or a serialiser writes them as null, which a policy reads
    as "not set". An integer past 2^53 is read exactly by some engines and rounded by others (a
    64-bit one by regorus, any by OPA; a runtime in JavaScript never had it): send it as a
    string. One check for every way into the policy: ``POST /v1/decisions``, the Data API's
    input and ``armctl decide``. Iterative, so a deeply nested document cannot exhaust the stack.
    """
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        kind = type(node)
        if kind is dict:
            stack.extend((child, [*path, key]) for key, child in reversed(node.items()))
        elif kind is list:
            stack.extend((child, [*path, index]) for index, child in reversed(list(enumerate(node))))
        elif kind is float:
            if node != node:
                return path, f"{field_name(where, path)} is NaN, which is not a JSON number"
            if node in (math.inf, -math.inf):
                return path, f"{field_name(where, path)} is infinite or past a double's range, which no engine reads"
        elif kind is int and not -MAX_EXACT_INTEGER <= node <= MAX_EXACT_INTEGER:
            return path, (
                f"{field_name(where, path)} is an integer past 2^53 ({MAX_EXACT_INTEGER}), which engines round"
                " differently: send it as a string"
            )
    return None


def field_name(where: str, path: list[str | int]) -> str:
    """``args.items[3].amount``; a key that is no plain name in brackets: ``args["a.b"]``."""
    name = where
    for part in path:
        if isinstance(part, int):
            name += f"[{part}]"
        elif _PLAIN.fullmatch(part):
            name += f".{part}" if name else part
        else:
            name += f"[{json.dumps(part)}]"
    return name


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
