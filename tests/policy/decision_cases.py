"""The shared decision table: inputs as the decider builds them, and the answers the rules give.

``make_input`` builds a decision input; ``reference`` is a small model of the documented rules,
written independently of the Rego; ``CASES`` are the hand-written rows that pin the semantics
(``PINNED``) plus generated combinations of instance state, tool flags, risk, envelope limits,
spend, repeats and approvals; ``MALFORMED`` are inputs every engine must deny naming the field;
``QUERIES`` are Data API paths every engine must answer alike.
"""

from __future__ import annotations

import random
from typing import Any

from reconciler import money

RANK = {"GREEN": 0, "YELLOW": 1, "RED": 2}
HELD = {"PAUSED", "QUARANTINED", "RETIRED"}


def _micros(amount: float | None) -> int | None:
    return None if amount is None else money.micros(amount)


def make_input(
    *,
    state: str | None = "ACTIVE",
    tool: str = "crm.lookup",
    known: bool = True,
    writes: bool = False,
    risk: str = "GREEN",
    deny: tuple[str, ...] = (),
    allow: tuple[str, ...] | None = None,
    require: tuple[str, ...] = (),
    max_risk: str | None = None,
    approval_above: str | None = None,
    per_call: float | None = None,
    per_run: float | None = None,
    daily: float | None = None,
    estimate: float = 0.0,
    run: float = 0.0,
    day: float = 0.0,
    threshold: int | None = None,
    count: int = 0,
    granted: bool = False,
) -> dict[str, Any]:
    return {
        "instance": None if state is None else {"id": "i-1", "state": state, "tenant": "acme", "template": "t", "version": "t@1"},
        "environment": {"name": "dev", "production": False},
        "tool": {"name": tool, "known": known, "risk": risk, "writes": writes, "external": False, "productionImpact": False},
        "risk": {"level": risk, "catalogLevel": risk, "reasons": []},
        "args": {},
        "envelope": {
            "maxRisk": max_risk,
            "approvalAbove": approval_above,
            "tools": {"allow": None if allow is None else list(allow), "deny": list(deny), "requireApproval": list(require)},
            "budgets": {"perCall": _micros(per_call), "perRun": _micros(per_run), "daily": _micros(daily)},
            "loop": {"threshold": threshold, "windowSeconds": 60 if threshold else None},
            "approvals": {"requiredApprovals": None, "approverRoles": None, "ttlSeconds": None},
            "sources": [],
        },
        "cost": {"estimate": money.micros(estimate), "run": money.micros(run), "day": money.micros(day)},
        "loop": {"count": count},
        "approval": {"granted": granted},
    }


def reference(i: dict[str, Any]) -> dict[str, Any]:
    """The documented decision rules, independently of the Rego library."""
    deny: list[str] = []
    instance, tool, env = i["instance"], i["tool"], i["envelope"]
    if instance is None:
        return {"decision": "DENY", "reasons": ["unknown instance"]}  # for that alone
    if instance["state"] in HELD:
        deny.append(f"instance {instance['id']} is {instance['state']}")
    if instance["state"] == "READONLY" and tool["writes"]:
        deny.append(f"instance {instance['id']} is read-only and {tool['name']} writes")
    if not tool["known"]:
        deny.append(f"tool {tool['name']} is not in the tool catalog")
    if tool["name"] in env["tools"]["deny"]:
        deny.append(f"tool {tool['name']} is denied by the envelope")
    if env["tools"]["allow"] is not None and tool["name"] not in env["tools"]["allow"]:
        deny.append(f"tool {tool['name']} is not in the envelope's allow list")
    if env["maxRisk"] and RANK[i["risk"]["level"]] > RANK[env["maxRisk"]]:
        deny.append(f"risk {i['risk']['level']} is above the envelope's maxRisk {env['maxRisk']}")
    b, c, text = env["budgets"], i["cost"], money.text
    if b["perCall"] is not None and c["estimate"] > b["perCall"]:
        deny.append(f"BUDGET_EXCEEDED: estimated cost {text(c['estimate'])} is above the per-call budget {text(b['perCall'])}")
    if b["perRun"] is not None and c["run"] + c["estimate"] > b["perRun"]:
        deny.append(
            f"BUDGET_EXCEEDED: the run would spend {text(c['run'] + c['estimate'])}, above its budget {text(b['perRun'])}"
        )
    if b["daily"] is not None and c["day"] + c["estimate"] > b["daily"]:
        deny.append(
            f"BUDGET_EXCEEDED: today would reach {text(c['day'] + c['estimate'])}, above the daily budget {text(b['daily'])}"
        )
    t = env["loop"]["threshold"]
    if t is not None and i["loop"]["count"] >= t:
        deny.append(f"LOOP_DETECTED: the same call was made {i['loop']['count']} times in the loop window (threshold {t})")
    if deny:
        return {"decision": "DENY", "reasons": sorted(set(deny))}
    approval: list[str] = []
    if tool["name"] in env["tools"]["requireApproval"]:
        approval.append(f"tool {tool['name']} requires approval")
    if env["approvalAbove"] and RANK[i["risk"]["level"]] > RANK[env["approvalAbove"]]:
        approval.append(f"risk {i['risk']['level']} is above the envelope's approvalAbove {env['approvalAbove']}")
    if approval and not i["approval"]["granted"]:
        return {"decision": "NEEDS_APPROVAL", "reasons": sorted(approval)}
    return {"decision": "ALLOW", "reasons": ["approved request" if i["approval"]["granted"] else "within the envelope"]}


PINNED = [
    ("plain call", {}, "ALLOW"),
    ("unknown instance", {"state": None}, "DENY"),
    ("paused", {"state": "PAUSED"}, "DENY"),
    ("draining may still call", {"state": "DRAINING"}, "ALLOW"),
    ("read-only write", {"state": "READONLY", "writes": True}, "DENY"),
    ("read-only read", {"state": "READONLY"}, "ALLOW"),
    ("unknown tool", {"known": False}, "DENY"),
    ("denied tool", {"deny": ("crm.lookup",)}, "DENY"),
    ("outside allow list", {"allow": ("other",)}, "DENY"),
    ("risk over ceiling", {"risk": "RED", "max_risk": "YELLOW"}, "DENY"),
    ("risk needs approval", {"risk": "YELLOW", "approval_above": "GREEN"}, "NEEDS_APPROVAL"),
    ("listed tool needs approval", {"require": ("crm.lookup",)}, "NEEDS_APPROVAL"),
    ("approved call", {"require": ("crm.lookup",), "granted": True}, "ALLOW"),
    ("deny beats approval", {"require": ("crm.lookup",), "deny": ("crm.lookup",), "granted": True}, "DENY"),
    ("per-call budget", {"per_call": 1.0, "estimate": 1.25}, "DENY"),
    ("exactly the per-call budget", {"per_call": 1.0, "estimate": 1.0}, "ALLOW"),
    ("run budget", {"per_run": 5.0, "run": 4.5, "estimate": 0.75}, "DENY"),
    ("daily budget", {"daily": 20.0, "day": 19.99, "estimate": 0.02}, "DENY"),
    ("a run budget reached exactly (1.15 + 0.35 of 1.50)", {"per_run": 1.5, "run": 1.15, "estimate": 0.35}, "ALLOW"),
    ("a micro-unit past the run budget", {"per_run": 1.5, "run": 1.150001, "estimate": 0.35}, "DENY"),
    ("ticks of 0.02 and 2.74, then 0.24 of a run budget of 3.00", {"per_run": 3.0, "run": 2.76, "estimate": 0.24}, "ALLOW"),
    ("a daily budget reached exactly", {"daily": 20.0, "day": 19.98, "estimate": 0.02}, "ALLOW"),
    ("the largest estimate", {"per_call": 1.0, "estimate": 1e9}, "DENY"),
    ("an estimate past a half cent", {"per_call": 1.0, "estimate": 1.005}, "DENY"),
    ("a run spent near 2^53 micro-units, and the largest estimate", {"per_run": 1.0, "run": 9e9, "estimate": 1e9}, "DENY"),
    ("loop threshold reached", {"threshold": 3, "count": 3}, "DENY"),
    ("below the loop threshold", {"threshold": 3, "count": 2}, "ALLOW"),
]


def generated(count: int = 150, seed: int = 20261122) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    choices: dict[str, list[Any]] = {
        "state": [None, "ACTIVE", "PROVISIONING", "PAUSED", "QUARANTINED", "RETIRED", "READONLY", "DRAINING"],
        "known": [True, True, True, False],
        "writes": [False, True],
        "risk": ["GREEN", "YELLOW", "RED"],
        "deny": [(), ("crm.lookup",), ("shell.exec",)],
        "allow": [None, None, ("crm.lookup",), ("other",)],
        "require": [(), ("crm.lookup",)],
        "max_risk": [None, "YELLOW", "RED", "GREEN"],
        "approval_above": [None, "GREEN", "YELLOW"],
        "per_call": [None, 0.5, 2.0],
        "per_run": [None, 3.0],
        "daily": [None, 10.0],
        "estimate": [0.0, 0.25, 1.5],
        "run": [0.0, 2.75],
        "day": [0.0, 9.5],
        "threshold": [None, 3],
        "count": [0, 2, 3, 7],
        "granted": [False, False, True],
    }
    cases = []
    for n in range(count):
        picked = {key: rng.choice(values) for key, values in choices.items()}
        cases.append((f"generated-{n:03d}", picked))
    return cases


CASES = [(name, make_input(**kw)) for name, kw, _ in PINNED] + [(name, make_input(**kw)) for name, kw in generated()]


def _without(path: str, **kw: Any) -> dict[str, Any]:
    document = make_input(**kw)
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[key]
    del node[last]
    return document


def _with(path: str, value: Any, **kw: Any) -> dict[str, Any]:
    document = make_input(**kw)
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[key]
    node[last] = value
    return document


LEVELS = '"GREEN", "RED", "YELLOW"'
MICRO_UNITS = "a whole number of micro-units from 0 to 9007199254740991"
STATES = '"ACTIVE", "DRAINING", "PAUSED", "PROVISIONING", "QUARANTINED", "READONLY", "RETIRED"'

#: (name, input, reasons): each denied for exactly these reasons, whatever else it would be.
MALFORMED: list[tuple[str, Any, list[str]]] = [
    ("an empty input", {}, [f"input.{part} is missing" for part in sorted(make_input())]),
    ("a null input", None, ["input is missing or not an object"]),
    ("a string for an input", "crm.lookup", ["input is missing or not an object"]),
    ("a list for an input", [make_input()], ["input is missing or not an object"]),
    (
        "a state that needs escaping",
        _with("instance.state", 'a<b>&"\\\u2028\u2029\n\b\f\x7f'),
        [f"input.instance.state must be one of {STATES}, not " + '"a<b>&\\"\\\\\u2028\u2029\\n\\b\\f\x7f"'],
    ),
    (
        "the decision request's body",
        {"instance": "acme:support-agent-dev-g1-0", "tool": "shell.exec"},
        [
            "input.approval is missing",
            "input.args is missing",
            "input.cost is missing",
            "input.envelope is missing",
            "input.environment is missing",
            'input.instance must be null or object, not "acme:support-agent-dev-g1-0"',
            "input.loop is missing",
            "input.risk is missing",
            'input.tool must be an object, not "shell.exec"',
        ],
    ),
    ("no instance", _without("instance"), ["input.instance is missing"]),
    ("no instance state", _without("instance.state", state="PAUSED"), ["input.instance.state is missing"]),
    ("no instance id", _without("instance.id", state="PAUSED"), ["input.instance.id is missing"]),
    ("an unknown state", _with("instance.state", "ON_HOLD"), [f'input.instance.state must be one of {STATES}, not "ON_HOLD"']),
    ("no tool", _without("tool", deny=("crm.lookup",)), ["input.tool is missing"]),
    ("no tool name", _without("tool.name", deny=("crm.lookup",)), ["input.tool.name is missing"]),
    ("no tool risk", _without("tool.risk"), ["input.tool.risk is missing"]),
    ("a tool name that is no string", _with("tool.name", 42), ["input.tool.name must be string, not number"]),
    ("known as a string", _with("tool.known", "false"), ['input.tool.known must be boolean, not "false"']),
    ("no writes flag", _without("tool.writes", state="READONLY"), ["input.tool.writes is missing"]),
    ("no risk level", _without("risk.level", max_risk="GREEN", risk="RED"), ["input.risk.level is missing"]),
    ("a risk level in lower case", _with("risk.level", "red"), [f'input.risk.level must be one of {LEVELS}, not "red"']),
    ("no envelope", _without("envelope"), ["input.envelope is missing"]),
    ("no deny list", _without("envelope.tools.deny"), ["input.envelope.tools.deny is missing"]),
    (
        "a maxRisk not a level",
        _with("envelope.maxRisk", "AMBER"),
        [f'input.envelope.maxRisk must be one of {LEVELS}, null, not "AMBER"'],
    ),
    (
        "a budget as a string",
        _with("envelope.budgets.perCall", "1.00"),
        [f'input.envelope.budgets.perCall must be null or {MICRO_UNITS}, not "1.00"'],
    ),
    (
        "a budget as a fraction (currency units, not micro-units)",
        _with("envelope.budgets.perRun", 1.5),
        [f"input.envelope.budgets.perRun must be null or {MICRO_UNITS}, not a fraction"],
    ),
    ("no cost", _without("cost", per_call=1.0), ["input.cost is missing"]),
    ("a cost as a string", _with("cost.estimate", "5", per_call=1.0), [f'input.cost.estimate must be {MICRO_UNITS}, not "5"']),
    (
        "a cost as a fraction",
        _with("cost.estimate", 0.35, per_call=1.0),
        [f"input.cost.estimate must be {MICRO_UNITS}, not a fraction"],
    ),
    ("a negative spend", _with("cost.run", -1, per_run=1.0), [f"input.cost.run must be {MICRO_UNITS}, not a negative number"]),
    (
        "a spend past 2^53",
        _with("cost.day", 2**53, daily=1.0),
        [f"input.cost.day must be {MICRO_UNITS}, not a number above 9007199254740991"],
    ),
    (
        "a loop threshold that is no whole number",
        _with("envelope.loop.threshold", 2.5, count=3),
        ["input.envelope.loop.threshold must be null or a whole number from 0 to 9007199254740991, not a fraction"],
    ),
    ("no loop count", _without("loop.count", threshold=1), ["input.loop.count is missing"]),
    ("no approval", _without("approval"), ["input.approval is missing"]),
    (
        "granted as a string",
        _with("approval.granted", "no", require=("crm.lookup",)),
        ['input.approval.granted must be boolean, not "no"'],
    ),
    (
        "an unknown instance with no tool name",
        _without("tool.name", state=None),
        ["input.tool.name is missing", "unknown instance"],
    ),
]

#: (path, input) the Data API is asked: every engine must answer alike.
QUERIES: list[tuple[list[str], Any]] = [
    (["arm", "decision", "result"], make_input()),
    (["arm", "decision", "result"], {}),
    (["arm", "decision", "result"], None),
    (["arm"], None),
    (["arm", "fleet"], None),
    (["arm", "fleet", "envelopes", "acme", "t@1", "tools", "deny", "0"], None),
    (["arm", "decision", "risk_rank", "RED"], None),
    (["arm", "no", "such", "rule"], {}),
    (["", "arm", "", "decision", "risk_rank"], None),
    ([], None),
]


def fleet_modules() -> dict[str, str]:
    """The sample fleet's Rego modules (tests left out), as a commit carries them."""
    from tests.conftest import SAMPLE_FLEET

    return {
        f"fleet/{p.relative_to(SAMPLE_FLEET).as_posix()}": p.read_text()
        for p in sorted(SAMPLE_FLEET.rglob("*.rego"))
        if not p.name.endswith("_test.rego")
    }


def fleet_input(tool: str, args: Any, *, production: bool = False, risk: str = "GREEN", **kw: Any) -> dict[str, Any]:
    """A well-formed input for the sample fleet's rules: ``tool`` called with ``args``."""
    document = make_input(tool=tool, risk=risk, **kw)
    document["args"] = args
    document["environment"] = {"name": "prod" if production else "dev", "production": production}
    return document


def _deny(*reasons: str) -> dict[str, Any]:
    return {"decision": "DENY", "reasons": sorted(reasons)}


def _review(*reasons: str) -> dict[str, Any]:
    return {"decision": "NEEDS_APPROVAL", "reasons": sorted(reasons)}


_ALLOW = {"decision": "ALLOW", "reasons": ["within the envelope"]}
_NO_AMOUNT = "payments.refund needs a numeric amount"
_ABOVE = "refunds above 500 need the billing desk"
_REVIEW = "refunds above 100 are reviewed by the billing desk"
_REPLICAS = "k8s.scale-deployment: replicas must be between 1 and 20"


def _outside(address: str) -> str:
    return f"outside production, email.send may only reach acme.example addresses (not {address})"


#: (name, input, answer) for the sample fleet's rules (fleet/policies/acme.rego) with the library:
#: the differences found between engines, each pinned.
FLEET_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("a refund without an amount", fleet_input("payments.refund", {"payment": "P-90012", "currency": "EUR"}), _deny(_NO_AMOUNT)),
    ("a refund with a null amount", fleet_input("payments.refund", {"amount": None}), _deny(_NO_AMOUNT)),
    ("a refund with the amount as a string", fleet_input("payments.refund", {"amount": "750"}), _deny(_NO_AMOUNT)),
    ("a refund above the limit", fleet_input("payments.refund", {"amount": 750}), _deny(_ABOVE)),
    ("a refund a fraction above the limit", fleet_input("payments.refund", {"amount": 500.01}), _deny(_ABOVE)),
    ("a refund at the limit", fleet_input("payments.refund", {"amount": 500}), _review(_REVIEW)),
    ("a refund reviewed", fleet_input("payments.refund", {"amount": 250.5}), _review(_REVIEW)),
    ("a refund at the review line", fleet_input("payments.refund", {"amount": 100}), _ALLOW),
    (
        "a small refund in production",
        fleet_input("payments.refund", {"amount": 40}, production=True, risk="RED"),
        _review("payments.refund is a RED tool in production"),
    ),
    ("a scale without replicas", fleet_input("k8s.scale-deployment", {"deployment": "checkout"}), _deny(_REPLICAS)),
    ("a scale to zero", fleet_input("k8s.scale-deployment", {"replicas": 0}), _deny(_REPLICAS)),
    ("a scale to a fraction", fleet_input("k8s.scale-deployment", {"replicas": 2.5}), _deny(_REPLICAS)),
    ("a scale as a string", fleet_input("k8s.scale-deployment", {"replicas": "6"}), _deny(_REPLICAS)),
    ("a scale within range", fleet_input("k8s.scale-deployment", {"replicas": 20}), _ALLOW),
    ("one external recipient as a string", fleet_input("email.send", {"to": "a@example.com"}), _deny(_outside("a@example.com"))),
    ("one internal recipient as a string", fleet_input("email.send", {"to": "QA@Acme.Example"}), _ALLOW),
    (
        "an external cc in a list",
        fleet_input("email.send", {"to": ["qa@acme.example"], "cc": ["x@example.org"]}),
        _deny(_outside("x@example.org")),
    ),
    ("an external recipient in production", fleet_input("email.send", {"to": ["x@example.org"]}, production=True), _ALLOW),
    (
        "a null recipient",
        fleet_input("email.send", {"to": None}),
        _deny("email.send: to must be an address or a list of addresses"),
    ),
    (
        "a numeric recipient in production",
        fleet_input("email.send", {"bcc": 7}, production=True),
        _deny("email.send: bcc must be an address or a list of addresses"),
    ),
    (
        "a list holding a number",
        fleet_input("email.send", {"to": ["qa@acme.example", 7]}),
        _deny("email.send: to must be an address or a list of addresses"),
    ),
    (
        "an address with two at signs",
        fleet_input("email.send", {"to": ["a@acme.example@example.com"]}),
        _deny(_outside("a@acme.example@example.com")),
    ),
    ("an email with no recipients", fleet_input("email.send", {"subject": "hello"}), _ALLOW),
    (
        "a RED tool in production",
        fleet_input("shell.exec", {}, production=True, risk="RED"),
        _review("shell.exec is a RED tool in production"),
    ),
    (
        "the fleet's reasons with the library's",
        fleet_input("payments.refund", {"amount": 900}, per_call=1.0, estimate=2.0),
        _deny(_ABOVE, "BUDGET_EXCEEDED: estimated cost 2.00 is above the per-call budget 1.00"),
    ),
]
