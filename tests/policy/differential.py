"""Inputs for the differential test of the engines, and the comparison itself.

Every generator takes a ``random.Random``: the property test (test_differential.py) draws one from
hypothesis, which shrinks what it draws, and ``bench/bench_differential.py`` runs the same
generators on a seeded one at 100,000+ inputs. Inputs come in three kinds:

- **well formed**: as the reconciler builds them (through ``policy.inputs.build_input``, from
  contexts of every instance state, envelope, spend, repeats and approval), with arguments the
  sample fleet's rules read given every kind of JSON value;
- **edge**: well formed, at the edges of the contract: budgets reached exactly and by one
  micro-unit more, the largest amounts, long and odd strings, floats at a double's limits;
- **malformed**: a well-formed input with a field removed or replaced by any JSON value, no
  input at all, or any JSON value instead of one.

Numbers stay inside what the entry points take (``policy.inputs.number_problem``): no NaN, no
Infinity, no integer past 2^53. Gate inputs (``data.arm.gates.results``) are made alike. Every
entry point must give the same answer on both engines, an error on either being a difference.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from reconciler import errors, money
from reconciler.policy import engines, envelopes, inputs, library
from tests.policy.decision_cases import fleet_modules, make_input

#: (name, how it is asked): the entry points compared.
DECISION_RULE = inputs.DECISION_RULE
UNCHECKED_RULE = inputs.UNCHECKED_RULE
GATES_RULE = "data.arm.gates.results"
DATA_API = "POST /v1/data/arm/decision/result"

MAX_WHOLE = 2**53 - 1

STRINGS = [
    "", "a", "crm.lookup", "payments.refund", "email.send", "k8s.scale-deployment", "shell.exec", "mystery",
    "qa@acme.example", "QA-Team@Acme.Example", "x@example.com", "a@acme.example@example.com", "@", "acme.example",
    "ACTIVE", "PAUSED", "READONLY", "RETIRED", "GREEN", "YELLOW", "RED", "green", "APPROVE", "DENY", "OK",
    "<script>&amp;</script>", "\u2028\u2029", '"quoted" \\ back', "\n\t\b\f\r\x7f", "\x00", "ünïcødé", "😀 𝄞",
    "%d %s %v", "1.50", "500", "-1", "null", "true", "[]", "{}", "x" * 300,
]  # fmt: skip

NUMBERS = [
    0, 1, -1, 2, 3, 6, 20, 21, 99, 100, 101, 250, 499, 500, 501, 750, 1000, 0.0, 1.0, -0.5, 0.5, 2.5, 19.99, 20.5,
    100.5, 500.01, 500.0000001, 499.9999999, 0.1, 0.2, 0.3, 0.35, 1.005, 1.15, 1.1500000000000001, 0.285, 1e-05,
    1e-300, 5e-324, 1e15, 1e300, -1e300, 1.7976931348623157e308, 9007199254.740991, MAX_WHOLE, -MAX_WHOLE,
    MAX_WHOLE - 1, 10**15, 10**15 + 1,
]  # fmt: skip

TOOLS = [
    "crm.lookup", "payments.refund", "email.send", "k8s.scale-deployment", "shell.exec", "kb.search-articles",
    "payments.charge", "mystery",
]  # fmt: skip
STATES = ["PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"]
LEVELS = ["GREEN", "YELLOW", "RED"]


def bundle() -> engines.Bundle:
    """The library and the sample fleet's rules, with fleet data as a tenant's bundle carries it."""
    envelope = envelopes.for_policy(make_input(deny=("shell.exec",))["envelope"])
    data = {"arm": {"fleet": {"envelopes": {"acme": {"t@1": envelope}}, "tools": {"acme": {"crm.lookup": {"risk": "GREEN"}}}}}}
    return engines.Bundle(library.modules_for(fleet_modules(), tests=False), data, "differential")


# ---------------------------------------------------------------- JSON values


def scalar(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.35:
        return rng.choice(STRINGS)
    if pick < 0.7:
        return rng.choice(NUMBERS)
    if pick < 0.8:
        return rng.choice([True, False, None])
    if pick < 0.9:
        return rng.randint(-MAX_WHOLE, MAX_WHOLE)
    return rng.uniform(-1e6, 1e6)


def value(rng: random.Random, depth: int = 3) -> Any:
    """Any JSON value, nested at most ``depth`` deep."""
    pick = rng.random()
    if depth <= 0 or pick < 0.6:
        return scalar(rng)
    if pick < 0.8:
        return [value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice([*STRINGS, "to", "cc", "bcc", "amount", "replicas"]): value(rng, depth - 1) for _ in range(rng.randint(0, 4))
    }


def amount(rng: random.Random) -> float:
    return rng.choice(
        [0.0, 0.01, 0.02, 0.24, 0.35, 1.0, 1.15, 1.5, 2.74, 2.76, 3.0, 4.75, 5.0, 19.98, 20.0, 1e9, rng.uniform(0, 10)]
    )


def arguments(rng: random.Random, tool: str) -> dict[str, Any]:
    """Arguments for ``tool``: the fields the fleet's rules read, each any JSON value or left out."""
    fields = {
        "payments.refund": ["amount", "currency", "payment"],
        "email.send": ["to", "cc", "bcc", "subject"],
        "k8s.scale-deployment": ["replicas", "deployment"],
    }.get(tool, ["query", "id"])
    args: dict[str, Any] = {}
    for field in fields:
        if rng.random() < 0.75:
            if field in ("to", "cc", "bcc") and rng.random() < 0.6:
                args[field] = rng.choice([rng.choice(STRINGS), [rng.choice(STRINGS) for _ in range(rng.randint(0, 3))]])
            else:
                args[field] = value(rng, 2)
    if rng.random() < 0.1:
        args["api_key"] = "sk-" + "abcdefghijklmnopqrstuvwxyz"[: rng.randint(4, 26)]  # raises the risk
    return args


# ---------------------------------------------------------------- decision inputs


def well_formed(rng: random.Random) -> dict[str, Any]:
    """An input as the reconciler builds it (``inputs.build_input``)."""
    tool = rng.choice(TOOLS)
    env = make_input(
        deny=tuple(rng.sample(TOOLS, rng.choice([0, 0, 1, 2]))),
        allow=rng.choice([None, None, None, tuple(rng.sample(TOOLS, rng.randint(0, 6)))]),
        require=tuple(rng.sample(TOOLS, rng.randint(0, 4))),
        max_risk=rng.choice([None, None, *LEVELS]),
        approval_above=rng.choice([None, *LEVELS]),
        per_call=rng.choice([None, None, amount(rng)]),
        per_run=rng.choice([None, None, amount(rng)]),
        daily=rng.choice([None, None, amount(rng)]),
        threshold=rng.choice([None, 2, 3, 5]),
    )["envelope"]
    # The stored envelope states budgets in currency units; build_input gives them in micro-units.
    env["budgets"] = {k: (None if v is None else v / money.MICROS) for k, v in env["budgets"].items()}
    entry = None if rng.random() < 0.15 else {"name": tool, "risk": rng.choice(LEVELS), "writes": rng.random() < 0.5}
    if entry and rng.random() < 0.5:
        entry |= {"external": rng.random() < 0.5, "productionImpact": rng.random() < 0.5}
    state = rng.choice(["ACTIVE", "ACTIVE", "ACTIVE", *STATES])
    instance = {"id": "acme:app-0", "state": state, "tenant": "acme", "template": "app", "version": "app@1"}
    production = rng.random() < 0.4
    context = inputs.Context(
        instance,
        {"name": "prod" if production else "dev", "production": production},
        entry,
        env,
        money.micros(amount(rng)),
        money.micros(amount(rng)),
        rng.choice([0, 1, 2, 3, 4, 7]),
        rng.random() < 0.2,
    )
    document, _ = inputs.build_input(context, tool, arguments(rng, tool), amount(rng))
    return document


def edge(rng: random.Random) -> dict[str, Any]:
    """A well-formed input at the edges: budgets reached exactly, or by one micro-unit more;
    the largest amounts and counts; odd strings where strings go."""
    document = well_formed(rng)
    cost, budgets = document["cost"], document["envelope"]["budgets"]
    key, spent = rng.choice([("perCall", None), ("perRun", "run"), ("daily", "day")])
    limit = rng.choice([0, 1, 10**6, 1_500_000, 3_000_000, 10**15, MAX_WHOLE])
    budgets[key] = limit
    estimate = rng.randint(0, min(limit, 10**15))
    cost["estimate"] = estimate
    if spent is not None:
        cost[spent] = limit - estimate + rng.choice([0, 0, 1, -1 if limit - estimate > 0 else 0])
    elif rng.random() < 0.5:
        cost["estimate"] = min(limit + 1, MAX_WHOLE)
    if rng.random() < 0.3:
        document["loop"]["count"] = rng.choice([0, 2, 3, MAX_WHOLE])
        document["envelope"]["loop"]["threshold"] = rng.choice([None, 0, 1, 3, MAX_WHOLE])
    if rng.random() < 0.3:
        document["tool"]["name"] = rng.choice(STRINGS)
    if rng.random() < 0.2:
        document["instance"]["id"] = rng.choice(STRINGS)
    return document


def malformed(rng: random.Random) -> Any:
    """A well-formed input broken in one or a few places, or no input at all."""
    pick = rng.random()
    if pick < 0.05:
        return None
    if pick < 0.15:
        return value(rng, 3)
    document = well_formed(rng)
    for _ in range(rng.randint(1, 3)):
        _break(rng, document)
    return document


def _break(rng: random.Random, document: dict[str, Any]) -> None:
    paths = list(_paths(document))
    if not paths:
        return
    parent, key = rng.choice(paths)
    if rng.random() < 0.4:
        del parent[key]
    else:
        parent[key] = value(rng, 2)


def _paths(node: Any) -> Any:
    if isinstance(node, dict):
        for key, child in list(node.items()):
            yield node, key
            yield from _paths(child)


def decision_input(rng: random.Random) -> tuple[str, Any]:
    kind = rng.choice(["well-formed", "edge", "malformed"])
    make: Callable[[random.Random], Any] = {"well-formed": well_formed, "edge": edge, "malformed": malformed}[kind]
    return kind, make(rng)


# ---------------------------------------------------------------- gate inputs


def gate_input(rng: random.Random) -> tuple[str, dict[str, Any]]:
    steps = [_step(rng, n) for n in range(rng.randint(0, 4))]
    kind = "well-formed"
    if steps and rng.random() < 0.5:
        kind = "malformed"
        for _ in range(rng.randint(1, 3)):
            step = rng.choice(steps)
            paths = [(parent, key) for parent, key in _paths(step) if not (parent is step and key == "id")]
            if paths:
                parent, key = rng.choice(paths)
                if rng.random() < 0.4:
                    del parent[key]
                else:
                    parent[key] = value(rng, 2)
    return kind, {"steps": steps}


def _evidence(rng: random.Random) -> list[dict[str, Any]]:
    """Judged evaluation evidence as the planner sends it: a suite's category, whether the step
    requires it, its status, and (not for passing ones) the reconciler's summary."""
    found = []
    for _ in range(rng.randint(0, 3)):
        category = rng.choice(["safety", "regression", "capability"])
        suite, status = rng.choice(["qa", "jailbreak-v2", "drift"]), rng.choice(["missing", "passing", "failing"])
        entry = {"suite": suite, "category": category, "required": rng.random() < 0.7, "status": status}
        if status != "passing":
            entry["summary"] = f"{category} suite {suite} scored {rng.choice(['97.0%', '28.5%', '0.3'])} (needs 100%)"
        found.append(entry)
    return found


def _step(rng: random.Random, n: int) -> dict[str, Any]:
    step: dict[str, Any]
    if rng.random() < 0.5:
        step = {
            "id": f"AgentVersion/acme/a@{n}/TESTING->CANDIDATE",
            "kind": "AgentVersion",
            "from": "TESTING",
            "to": rng.choice(["CANDIDATE", "APPROVED"]),
            "version": {"name": f"a@{n}", "template": "a", "lifecycle": "TESTING", "integrity": "OK"},
            "evidence": _evidence(rng),
        }
    else:
        step = {
            "id": f"Deployment/acme/d{n}",
            "kind": "Deployment",
            "from": "PENDING",
            "to": "ACTIVE",
            "version": {
                "name": f"a@{n}",
                "template": "a",
                "lifecycle": rng.choice(list(_LIFECYCLES)),
                "integrity": rng.choice(["OK", "FAILED"]),
            },
            "environment": {"name": "prod", "admission": {"minLifecycle": rng.choice(list(_LIFECYCLES))}},
            "evidence": _evidence(rng),
        }
    if rng.random() < 0.5:
        roles = ["release-manager", "security-officer"]
        step["requirement"] = {"required": rng.randint(1, 3), "roles": rng.sample(roles, rng.randint(1, 2))}
        step["approvals"] = [
            {"operator": rng.choice(["alice", "bob", "carol"]), "roles": rng.sample([*roles, "viewer"], rng.randint(0, 2)),
             "decision": rng.choice(["APPROVE", "APPROVE", "DENY"])}
            for _ in range(rng.randint(0, 3))
        ]  # fmt: skip
    return step


_LIFECYCLES = ("DRAFT", "TESTING", "CANDIDATE", "APPROVED", "DEPRECATED", "RETIRED")


# ---------------------------------------------------------------- comparing


@dataclasses.dataclass
class Tally:
    """Inputs compared and differences found, per entry point and kind of input."""

    compared: dict[str, int] = dataclasses.field(default_factory=dict)
    differences: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: list[tuple[str, Any, Any, Any]] = dataclasses.field(default_factory=list)

    def add(self, entry: str, document: Any, embedded: Any, real: Any) -> bool:
        self.compared[entry] = self.compared.get(entry, 0) + 1
        if embedded == real:
            return True
        self.differences[entry] = self.differences.get(entry, 0) + 1
        if len(self.examples) < 20:
            self.examples.append((entry, document, embedded, real))
        return False


def answer(engine: engines.Engine, rule: str, document: Any) -> Any:
    """What ``engine`` answers: the rule's value as JSON has it, or the error (a difference)."""
    try:
        if rule == DATA_API:
            return engine.query(["arm", "decision", "result"], document)
        return engines.jsonable(engine.evaluate(rule, document))
    except errors.PolicyError as exc:
        return ("error", type(exc).__name__)


def compare_decision(tally: Tally, embedded: engines.Engine, real: engines.Engine, kind: str, document: Any) -> None:
    rules = [DECISION_RULE, DATA_API]
    if kind != "malformed":
        rules.append(UNCHECKED_RULE)  # the reconciler's own entry point, for the inputs it builds
    for rule in rules:
        tally.add(f"{rule} ({kind})", document, answer(embedded, rule, document), answer(real, rule, document))


def compare_gates(tally: Tally, embedded: engines.Engine, real: engines.Engine, kind: str, document: Any) -> None:
    tally.add(f"{GATES_RULE} ({kind})", document, answer(embedded, GATES_RULE, document), answer(real, GATES_RULE, document))


def in_contract(document: Any) -> bool:
    """Whether the entry points take ``document`` (no NaN, Infinity or integer past 2^53)."""
    return inputs.number_problem(document, "input") is None


__all__ = [
    "DATA_API",
    "DECISION_RULE",
    "GATES_RULE",
    "UNCHECKED_RULE",
    "Tally",
    "bundle",
    "compare_decision",
    "compare_gates",
    "decision_input",
    "gate_input",
    "in_contract",
]
