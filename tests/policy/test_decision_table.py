"""One decision table, every engine: embedded regorus, OPA through opa-python-client, real OPA.

The table is ~170 cases: hand-written rows that pin the semantics, plus generated combinations
of instance state, tool flags, risk, envelope limits, spend, repeats and approvals. Each case's
expected answer comes from a small reference model of the documented rules (below), written
independently of the Rego; every engine must give exactly that answer. The OPA engine runs
against the project's OPA-protocol test double (no OPA binary can be installed here), and
against a real ``opa`` too when one is on PATH.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler import errors
from reconciler.policy import engines, library, opa
from tests.policy.opa_double import OpaDouble

RANK = {"GREEN": 0, "YELLOW": 1, "RED": 2}
HELD = {"PAUSED", "QUARANTINED", "RETIRED"}


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
            "budgets": {"perCall": per_call, "perRun": per_run, "daily": daily},
            "loop": {"threshold": threshold, "windowSeconds": 60 if threshold else None},
            "approvals": {"requiredApprovals": None, "approverRoles": None, "ttlSeconds": None},
            "sources": [],
        },
        "cost": {"estimate": estimate, "run": run, "day": day},
        "loop": {"count": count},
        "approval": {"granted": granted},
    }


def reference(i: dict[str, Any]) -> dict[str, Any]:
    """The documented decision rules, independently of the Rego library."""
    deny: list[str] = []
    instance, tool, env = i["instance"], i["tool"], i["envelope"]
    if instance is None:
        deny.append("unknown instance")
    else:
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
    b, c = env["budgets"], i["cost"]
    if b["perCall"] is not None and c["estimate"] > b["perCall"]:
        deny.append(f"BUDGET_EXCEEDED: estimated cost {c['estimate']:.2f} is above the per-call budget {b['perCall']:.2f}")
    if b["perRun"] is not None and c["run"] + c["estimate"] > b["perRun"]:
        deny.append(f"BUDGET_EXCEEDED: the run would spend {c['run'] + c['estimate']:.2f}, above its budget {b['perRun']:.2f}")
    if b["daily"] is not None and c["day"] + c["estimate"] > b["daily"]:
        deny.append(f"BUDGET_EXCEEDED: today would reach {c['day'] + c['estimate']:.2f}, above the daily budget {b['daily']:.2f}")
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


def test_the_reference_agrees_with_the_pinned_rows() -> None:
    assert [reference(make_input(**kw))["decision"] for _, kw, _ in PINNED] == [expected for _, _, expected in PINNED]
    assert len(CASES) >= 100
    assert {reference(i)["decision"] for _, i in CASES} == {"ALLOW", "NEEDS_APPROVAL", "DENY"}


def _bundle() -> engines.Bundle:
    return engines.Bundle(library.modules_for({}, tests=False), {}, "table")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _engines() -> Iterator[Any]:
    yield pytest.param("embedded", id="embedded")
    yield pytest.param("opa-client", id="opa-client-against-test-double")
    yield pytest.param(
        "real-opa",
        id="real-opa",
        marks=pytest.mark.skipif(
            shutil.which("opa") is None, reason="no opa binary on PATH (none can be installed from this project's registries)"
        ),
    )


@pytest.fixture(params=list(_engines()))
def engine(request: pytest.FixtureRequest) -> Iterator[engines.Engine]:
    kind = request.param
    if kind == "embedded":
        embedded = engines.EmbeddedEngine()
        embedded.load(_bundle())
        yield embedded
    elif kind == "opa-client":
        with OpaDouble() as double:
            client = opa.OpaEngine(double.url)
            client.load(_bundle())
            yield client
    else:
        port = _free_port()
        proc = subprocess.Popen(
            ["opa", "run", "--server", "--addr", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            real = opa.OpaEngine(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 15
            while True:
                try:
                    real.load(_bundle())
                    break
                except errors.PolicyError:  # the server is still starting
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield real
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_every_engine_gives_the_reference_answer_for_every_case(engine: engines.Engine) -> None:
    wrong = []
    for name, document in CASES:
        got = engine.evaluate("data.arm.decision.result", document)
        want = reference(document)
        if got != want:
            wrong.append((name, got, want))
    assert wrong == []
