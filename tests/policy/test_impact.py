"""Decision impact between two sides, on the real embedded engine: exact flips for an envelope
edit, a catalog risk change and a fleet Rego edit; widening marked; identical inputs asked once;
a recorded decision replayed as the endpoint would decide it."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from reconciler.policy import envelopes, impact, inputs, replays, risk

TENANT = "t"

BASE_ENVELOPE = {"maxRisk": "RED", "approvalAbove": "YELLOW", "tools": {"deny": []}, "loop": {"threshold": 5}}

CATALOG = {
    "kb.search": {"name": "kb.search", "risk": "GREEN"},
    "web.fetch": {"name": "web.fetch", "risk": "GREEN", "external": True},
    "crm.update": {"name": "crm.update", "risk": "YELLOW", "writes": True},
}


def side(
    envelope: dict[str, Any] | None = None,
    tools: dict[str, dict[str, Any]] | None = None,
    rego: dict[str, str] | None = None,
    versions: tuple[str, ...] = ("bot@1", "bot@2"),
) -> impact.Side:
    chain = [("Tenant", TENANT)]
    effective = envelopes.effective(chain, {("Tenant", TENANT): [("base", envelope or BASE_ENVELOPE)]})
    keys = [(TENANT, v) for v in versions]
    return impact.Side(
        "rev",
        rego or {},
        {k: effective for k in keys},
        {k: "bot" for k in keys},
        {k: "APPROVED" for k in keys},
        {TENANT: tools or CATALOG},
        {(TENANT, "dev"): False, (TENANT, "prod"): True},
        {(TENANT, "bot@1"): frozenset({"dev"})},  # bot@2 is deployable, not deployed
    )


def flips(base: impact.Side, head: impact.Side) -> list[tuple[str, str, str, int, tuple[str, ...], bool]]:
    report = impact.probe(base, head).as_dict()
    return [(f["tool"], f["from"], f["to"], f["count"], tuple(f["versions"]), f["widening"]) for f in report["flips"]]


def test_an_envelope_edit_flips_exactly_the_calls_of_the_tool_it_denies() -> None:
    head_envelope = {**BASE_ENVELOPE, "tools": {"deny": ["kb.search"]}}
    # kb.search is GREEN: its calls reach GREEN (ALLOW), YELLOW (ALLOW) and RED (NEEDS_APPROVAL).
    # bot@1 runs in dev (one environment); bot@2 is not deployed: probed as dev and as prod.
    assert flips(side(), side(head_envelope)) == [
        ("kb.search", "ALLOW", "DENY", 6, ("bot@1", "bot@2"), False),
        ("kb.search", "NEEDS_APPROVAL", "DENY", 3, ("bot@1", "bot@2"), False),
    ]
    # The other way round every flip widens.
    assert flips(side(head_envelope), side()) == [
        ("kb.search", "DENY", "ALLOW", 6, ("bot@1", "bot@2"), True),
        ("kb.search", "DENY", "NEEDS_APPROVAL", 3, ("bot@1", "bot@2"), True),
    ]


def test_a_catalog_risk_change_flips_the_calls_it_raises_past_the_approval_line() -> None:
    raised = {**CATALOG, "kb.search": {"name": "kb.search", "risk": "YELLOW"}}
    # GREEN → YELLOW: a plain call (GREEN → YELLOW) still passes approvalAbove YELLOW; a call
    # raised once (YELLOW → RED) now needs approval; raised twice it was RED already.
    assert flips(side(), side(tools=raised)) == [("kb.search", "ALLOW", "NEEDS_APPROVAL", 3, ("bot@1", "bot@2"), False)]


def test_a_fleet_rego_edit_flips_what_its_rule_denies() -> None:
    rule = {
        "fleet/policies/t.rego": 'package arm.ext.t\n\nimport rego.v1\n\ndeny contains "no fetching" if input.tool.name == "web.fetch"\n'
    }
    assert flips(side(), side(rego=rule)) == [
        ("web.fetch", "ALLOW", "DENY", 6, ("bot@1", "bot@2"), False),
        ("web.fetch", "NEEDS_APPROVAL", "DENY", 3, ("bot@1", "bot@2"), False),
    ]


def test_a_change_that_decides_nothing_differently_says_so_and_asks_nothing() -> None:
    base = side()
    renamed = dataclasses.replace(side(), revision="other")
    report = impact.probe(base, renamed).as_dict()
    assert report["changed"] is False and report["flips"] == []
    assert report["evaluated"] == 0 and report["probes"] > 0  # the same inputs on both sides


def test_identical_inputs_are_evaluated_once() -> None:
    head = side({**BASE_ENVELOPE, "maxRisk": "YELLOW"}, versions=tuple(f"bot@{i}" for i in range(50)))
    base = side(versions=tuple(f"bot@{i}" for i in range(50)))
    report = impact.probe(base, head).as_dict()
    # 50 versions share one envelope and no fleet rule reads the caller: per side, each distinct
    # (tool, risk, environment) is asked once, not once per version.
    assert report["versions"] == 50
    assert report["evaluated"] <= 2 * 3 * 3 * 2
    assert {(f["tool"], f["from"], f["to"]) for f in report["flips"]} == {
        ("kb.search", "NEEDS_APPROVAL", "DENY"),
        ("web.fetch", "NEEDS_APPROVAL", "DENY"),
        ("crm.update", "NEEDS_APPROVAL", "DENY"),
    }


def _recorded(decision: str, tool: str, args: dict[str, Any], **replay: Any) -> bytes:
    context = inputs.Context(
        {"id": "i-1", "state": "ACTIVE", "tenant": TENANT, "template": "bot", "version": "bot@1"},
        {"name": "dev", "production": False},
        CATALOG.get(tool),
        side().envelopes[(TENANT, "bot@1")],
    )
    _, assessment = inputs.build_input(context, tool, args, 0.0)
    redacted, _ = risk.redact_args(args)
    data = {
        "policy": True, "state": "ACTIVE", "template": "bot", "environment": "dev", "production": False, "spentRun": 0,
        "spentDay": 0, "loop": 0, "granted": False, "findings": assessment.findings_dict(), **replay,
    }  # fmt: skip
    payload = {
        "tool": tool, "args": redacted, "decision": decision, "callKey": inputs.call_key(tool, args), "costEstimate": 0.0,
        "version": "bot@1", "replay": data,
    }  # fmt: skip
    return orjson.dumps(payload)


def test_a_replay_decides_recorded_calls_again_as_the_endpoint_would() -> None:
    destructive = {"action": "delete", "password": "hunter2-secret"}  # raised by its findings, redacted when stored
    rows = [
        (1, TENANT, "2026-12-01T10:00:00", "i-1", _recorded("ALLOW", "kb.search", {"q": "x"})),
        (2, TENANT, "2026-12-01T10:00:01", "i-1", _recorded("ALLOW", "kb.search", {"q": "x"})),
        (3, TENANT, "2026-12-01T10:00:02", "i-1", _recorded("NEEDS_APPROVAL", "web.fetch", destructive)),
        (4, TENANT, "2026-12-01T10:00:03", "i-1", orjson.dumps({"tool": "kb.search", "decision": "ALLOW", "version": "bot@1"})),
        (5, TENANT, "2026-12-01T10:00:04", "i-1", _recorded("ALLOW", "kb.search", {"q": "y"}).replace(b'"bot@1"', b'"gone@1"')),
        (6, TENANT, "2026-12-01T10:00:05", "i-1", _recorded("DENY", "crm.update", {}, loop=9)),
    ]
    assert b"hunter2" not in rows[2][4]
    head = side({**BASE_ENVELOPE, "tools": {"deny": ["kb.search"]}, "loop": {"threshold": 5}})
    replayer = replays.Replayer(head)
    result = replayer.feed(rows).as_dict()
    assert result["replayed"] == 4
    assert result["unreplayable"] == 2
    assert result["unreplayableWhy"] == {replays.NO_REPLAY_DATA: 1, replays.VERSION_GONE: 1}
    assert [(f["tool"], f["from"], f["to"], f["count"], f["examples"]) for f in result["flips"]] == [
        ("kb.search", "ALLOW", "DENY", 2, [1, 2]),
    ]
    # The two identical kb.search calls were evaluated once; the loop counter still denies crm.update.
    assert result["evaluated"] == 3


def test_argument_probes_a_catalog_declares_catch_a_fleet_rule_that_reads_arguments() -> None:
    rule = (
        "package arm.ext.t\n\nimport rego.v1\n\nlimit := {limit}\n\n"
        'deny contains "refund too large" if {{\n\tinput.tool.name == "pay.refund"\n'
        '\tamount := object.get(input.args, "amount", 0)\n\tis_number(amount)\n\tamount > limit\n}}\n'
    )
    tools = {**CATALOG, "pay.refund": {"name": "pay.refund", "risk": "GREEN", "probes": [{"amount": 50}, {"amount": 300}]}}
    base = side(tools=tools, rego={"fleet/policies/t.rego": rule.format(limit=500)})
    head = side(tools=tools, rego={"fleet/policies/t.rego": rule.format(limit=200)})
    report = impact.probe(base, head).as_dict()
    # Without arguments the rule never fires; the declared refund of 300 is now above the limit.
    assert [(f["tool"], f["from"], f["to"], f["count"], f["example"]["args"]) for f in report["flips"]] == [
        ("pay.refund", "ALLOW", "DENY", 3, {"amount": 300})
    ]


def test_probing_on_every_core_finds_what_one_process_finds() -> None:
    # Enough distinct inputs for the forked evaluators: a rule that reads which version asks
    # makes every version's probes its own (40 versions × 20 tools × their risk levels × 2).
    tools = {f"tool.{i}": {"name": f"tool.{i}", "risk": ("GREEN", "YELLOW")[i % 2]} for i in range(20)}
    versions = tuple(f"bot@{i}" for i in range(40))
    rule = {
        "fleet/policies/t.rego": "package arm.ext.t\n\nimport rego.v1\n\n"
        'deny contains "odd tools of late versions" if {\n'
        '\tinput.instance.version in {"bot@3", "bot@17", "bot@39"}\n'
        '\tendswith(input.tool.name, "1")\n}\n'
    }
    base, head = side(tools=tools, versions=versions), side(tools=tools, rego=rule, versions=versions)
    alone = impact.probe(base, head, workers=1).as_dict()
    on_two = impact.probe(side(tools=tools, versions=versions), side(tools=tools, rego=rule, versions=versions), workers=2)
    assert on_two.evaluated >= impact._PARALLEL_FROM  # enough to be evaluated by forked processes
    assert on_two.as_dict() == alone
    # tool.1 and tool.11 are YELLOW: their calls reach YELLOW (ALLOW) and RED (NEEDS_APPROVAL),
    # each asked as dev and as prod (the three versions are not deployed).
    late = ["bot@17", "bot@3", "bot@39"]
    assert sorted((f["tool"], f["from"], f["to"], f["count"], f["versions"]) for f in alone["flips"]) == [
        ("tool.1", "ALLOW", "DENY", 6, late),
        ("tool.1", "NEEDS_APPROVAL", "DENY", 6, late),
        ("tool.11", "ALLOW", "DENY", 6, late),
        ("tool.11", "NEEDS_APPROVAL", "DENY", 6, late),
    ]


def test_probing_finishes_when_an_evaluating_process_dies() -> None:
    # The OOM killer, say: the chunks the dead process did not answer are evaluated in the
    # parent, and the impact is the same, not waited for for ever.
    from tests.oomkiller import killing_first_worker

    tools = {f"tool.{i}": {"name": f"tool.{i}", "risk": "GREEN"} for i in range(20)}
    versions = tuple(f"bot@{i}" for i in range(80))
    rule = {
        "fleet/policies/t.rego": 'package arm.ext.t\n\nimport rego.v1\n\ndeny contains "x" if input.instance.version == "bot@7"\n'
    }
    alone = impact.probe(side(tools=tools, versions=versions), side(tools=tools, rego=rule, versions=versions)).as_dict()
    with killing_first_worker() as killed:
        on_two = impact.probe(side(tools=tools, versions=versions), side(tools=tools, rego=rule, versions=versions), workers=2)
    assert killed and on_two.as_dict() == alone and alone["changed"]
