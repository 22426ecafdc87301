"""Effective policy envelopes: version > template > project > tenant, field by field.

An envelope leaves a field unset to inherit it. The effective envelope of a version takes each
scalar field from the most specific scope that sets it. Lists that restrict accumulate down the
chain so a broader scope's restriction cannot be lifted below it: ``tools.deny`` and
``tools.requireApproval`` are unions, ``tools.allow`` is the intersection of every allow list
that is set. Several envelopes at one scope apply in name order (a later name wins a scalar).
Computed when a commit is applied, not per request.

:func:`for_policy` is the envelope as the Rego library reads it (in the decision input and the
policy's data): the same, its budgets in whole micro-units (``reconciler.money``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler import money

__all__ = ["SCOPE_ORDER", "effective", "for_policy", "scope_chain"]

#: From the broadest scope to the most specific.
SCOPE_ORDER = ("Tenant", "Project", "AgentTemplate", "AgentVersion")

_SCALARS = {
    "maxRisk": ("maxRisk",),
    "approvalAbove": ("approvalAbove",),
    "budgets.perCall": ("budgets", "perCall"),
    "budgets.perRun": ("budgets", "perRun"),
    "budgets.daily": ("budgets", "daily"),
    "loop.threshold": ("loop", "threshold"),
    "loop.windowSeconds": ("loop", "windowSeconds"),
    "approvals.requiredApprovals": ("approvals", "requiredApprovals"),
    "approvals.approverRoles": ("approvals", "approverRoles"),
    "approvals.ttlSeconds": ("approvals", "ttlSeconds"),
    "approvals.escalateAfterSeconds": ("approvals", "escalateAfterSeconds"),
    "approvals.escalateTo": ("approvals", "escalateTo"),
}


def scope_chain(tenant: str, project: str | None, template: str | None, version: str | None) -> list[tuple[str, str]]:
    """The (scope kind, name) pairs that apply to a version, broadest first."""
    chain = [("Tenant", tenant)]
    if project:
        chain.append(("Project", project))
    if template:
        chain.append(("AgentTemplate", template))
    if version:
        chain.append(("AgentVersion", version))
    return chain


def effective(
    chain: Iterable[tuple[str, str]],
    envelopes: Mapping[tuple[str, str], list[tuple[str, Mapping[str, Any]]]],
) -> dict[str, Any]:
    """The effective envelope along ``chain``; ``envelopes`` maps a scope to its (name, spec)s,
    each spec as plain data with defaults filled in (``PolicyEnvelopeSpec.model_dump()``).

    The result is plain JSON-able data shaped like an envelope's spec: every scalar field (None
    when no scope sets it), the accumulated ``tools`` lists, and ``sources``: the envelope names
    that contributed, broadest first.
    """
    result: dict[str, Any] = {path: None for path in _SCALARS}
    deny: set[str] = set()
    require: set[str] = set()
    allow: set[str] | None = None
    sources: list[str] = []
    for scope in chain:
        for name, spec in sorted(envelopes.get(scope, []), key=lambda item: item[0]):
            sources.append(name)
            for path, attrs in _SCALARS.items():
                value: Any = spec
                for attr in attrs:
                    value = value.get(attr) if value is not None else None
                if value is not None:
                    result[path] = list(value) if isinstance(value, list | tuple) else value
            tools = spec.get("tools") or {}
            deny.update(tools.get("deny") or ())
            require.update(tools.get("requireApproval") or ())
            if tools.get("allow") is not None:
                allow = set(tools["allow"]) if allow is None else allow & set(tools["allow"])
    result["tools.deny"] = sorted(deny)
    result["tools.requireApproval"] = sorted(require)
    result["tools.allow"] = None if allow is None else sorted(allow)
    nested: dict[str, Any] = {"sources": sources}
    for path, value in result.items():
        head, _, tail = path.partition(".")
        if tail:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[head] = value
    return nested


def for_policy(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """``envelope`` with its budgets in micro-units, as the policy reads it; the rest shared, not
    copied. A budget that is not a number is left as it is, for the policy to refuse by name."""
    budgets = envelope.get("budgets")
    if not isinstance(budgets, Mapping):
        return dict(envelope)
    return {**envelope, "budgets": {key: _budget(value) for key, value in budgets.items()}}


def _budget(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # null (no budget), or something the policy refuses by name
    if not math.isfinite(value):
        return "not a finite number"  # refused by name; never written as null, which means no budget
    if not 0 <= value <= money.MAX_AMOUNT:
        return -1 if value < 0 else money.MAX_MICROS + 1  # refused by name, as out of range
    return money.micros(value)
