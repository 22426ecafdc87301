"""Hostile input gets a 4xx naming what is wrong, never a 500, and nothing is stored.

Reproduces issue 15's items 6 and 9: an approval id above 2^63; JSON nested ~1,000 deep
(``RecursionError``); decision arguments nested hundreds deep (the engine ran out of
recursion: 503); a lone surrogate ``"\\ud800"``; integers past 64 bits; ``NaN`` as an approval's
decision; ``costEstimate: true`` or ``"5"`` coerced to a number.
"""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
import sqlalchemy as sa

from reconciler.server import bodies
from reconciler.state import tables
from tests.server.serving import auth

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]


def ASK(args: str) -> str:  # noqa: N802 (reads as the constant it was)
    return '{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": ' + args + "}"


def _in(key: str, value: str) -> str:
    return '{"' + key + '": ' + value + "}"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _stored(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(tables.op_events)).scalar_one()


def test_hostile_json_gets_a_4xx_naming_the_problem_on_every_route(api: Api) -> None:
    client, engine, made = api
    runtime, operator = auth(made["runtime"]), auth(made["operator"])

    def event(detail: str) -> str:
        return '{"type": "TOOL_RESULT", "instance": "acme:app-dev-g1-0", "detail": ' + detail + "}"

    cases = [
        ("/v1/decisions", runtime, _nested(1000), "nested"),
        ("/v1/decisions", runtime, ASK(_in("a", _nested(bodies.MAX_DEPTH))), "nested deeper"),
        ("/v1/decisions", runtime, ASK('{"s": "\\ud800"}'), "surrogate"),
        ("/v1/decisions", runtime, ASK('{"n": 18446744073709551616}'), "past 2^53"),
        ("/v1/data/arm", runtime, _in("input", _nested(1000)), "nested"),
        ("/v1/data/arm", runtime, '{"input": {"n": 18446744073709551616}}', "past 2^53"),
        ("/v1/events", runtime, event(_nested(1000)), "nested"),
        ("/v1/events", runtime, event('"\\ud800"'), "surrogate"),
        ("/v1/events", runtime, event("18446744073709551616"), "past 64 bits"),
        ("/v1/approvals/1/decision", operator, '{"decision": NaN, "justification": "x"}', "NaN"),
        ("/v1/approvals/1/decision", operator, _nested(1000), "nested"),
    ]
    raw = [  # bytes that are not UTF-8 at all, and a surrogate encoded as UTF-8 would encode it
        ("/v1/decisions", runtime, ASK('{"s": "\xff\xfe"}').encode("latin-1"), "not valid UTF-8"),
        ("/v1/events", runtime, b'{"type": "TOOL_RESULT", "instance": "x", "s": "\xed\xa0\x80"}', "not valid UTF-8"),
    ]
    for path, headers, body, says in [(p, h, b.encode(), s) for p, h, b, s in cases] + raw:
        answer = client.post(path, content=body, headers=headers)
        assert 400 <= answer.status_code < 500, (path, says, answer.status_code, answer.text[:300])
        assert says in answer.text, (path, says, answer.text[:300])
        assert len(answer.content) < 2000  # the input is not echoed back
    logs = auth(made["runtime"]) | {"Content-Encoding": "gzip"}
    for body, says in ((_nested(1000), "nested"), ('[{"s": "\\ud800"}]', "surrogate"), ("[18446744073709551616]", "64 bits")):
        answer = client.post("/logs", content=gzip.compress(body.encode()), headers=logs)
        assert answer.status_code == 422 and says in answer.json()["message"], answer.text
    too_far = client.get(f"/v1/approvals/{2**64}", headers=operator)
    assert too_far.status_code == 422 and too_far.json()["problems"][0]["loc"] == ["path", "approval_id"]
    assert (
        client.post(
            f"/v1/approvals/{2**63}/decision", json={"decision": "APPROVE", "justification": "x"}, headers=operator
        ).status_code
        == 422
    )
    assert _stored(engine) == 0
    # Just inside the bounds it is decided as usual.
    deep = client.post("/v1/decisions", content=ASK(_in("a", _nested(bodies.MAX_DEPTH - 3))).encode(), headers=runtime)
    assert deep.status_code == 200 and deep.json()["decision"] in ("ALLOW", "DENY"), deep.text


@pytest.mark.parametrize("cost", ["true", "false", '"5"', "null"])
def test_a_cost_estimate_must_be_a_number(api: Api, cost: str) -> None:
    client, engine, made = api
    body = '{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "costEstimate": ' + cost + "}"
    answer = client.post("/v1/decisions", content=body.encode(), headers=auth(made["runtime"]))
    assert answer.status_code == 422, answer.text
    assert answer.json()["problems"][0]["loc"] == ["body", "costEstimate"]
    assert _stored(engine) == 0
    assert json.loads(answer.text)["error"] == "ValidationError"
