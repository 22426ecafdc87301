"""Numbers JSON cannot hold (NaN, Infinity, past a double's range) and absurd costs are refused
with a 422 naming the problem, through a real server; nothing is decided or stored."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests.server.serving import TRANSPORTS, auth

_JSON = {"Content-Type": "application/json"}


def _decisions(engine: sa.Engine) -> int:
    e = tables.op_events.c
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).where(e.type == "DECISION")).scalar_one())


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"a": NaN}}',
            "args.a is NaN, which is not a JSON number",
        ),
        (
            b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"n": 1e400}}',
            "args.n is infinite or past a double's range",
        ),
        (b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"n": [-1e400]}}', "args.n[0] is infinite or past"),
        (
            b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "costEstimate": Infinity}',
            "costEstimate is infinite or past",
        ),
        (b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "costEstimate": 1e30}', "less than or equal to 1000000000"),
        (
            b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"order": 9007199254740993}}',
            "args.order is an integer past 2^53 (9007199254740991), which engines round differently: send it as a string",
        ),
        (
            b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"big": 18446744073709551617}}',
            "args.big is an integer past 2^53",
        ),
        (
            b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "costEstimate": 9007199254740993}',
            "costEstimate is an integer past",
        ),
    ],
)
def test_decisions_with_numbers_out_of_range_get_422_and_nothing_is_stored(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], body: bytes, says: str
) -> None:
    client, engine, made = api
    before = _decisions(engine)
    response = client.post("/v1/decisions", content=body, headers={**_JSON, **auth(made["runtime"])})
    assert response.status_code == 422, response.text
    assert says in response.text
    assert _decisions(engine) == before
    if "past 2^53" in says or "NaN" in says or "infinite" in says:
        (problem,) = response.json()["problems"]
        assert problem["loc"][0] == "body" and problem["loc"][1] in ("args", "costEstimate")  # the field, named


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_long_numbers_that_engines_read_alike_are_decided(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    # Sixteen digits or more send a body down the careful path; what it takes is decided as usual.
    client, _, made = api
    for args in (b'{"order": 9007199254740991}', b'{"ratio": 0.1234567890123456789}', b'{"ref": "P-12345678901234567890"}'):
        body = b'{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": ' + args + b"}"
        response = client.post("/v1/decisions", content=body, headers={**_JSON, **auth(made["runtime"])})
        assert response.status_code == 200 and response.json()["decision"] == "ALLOW", response.text


@pytest.mark.parametrize("amount", [b"NaN", b"Infinity", b"1e400", b"-1", b"1e300", b"1000000001"])
def test_a_cost_tick_that_is_not_a_number_from_0_to_a_billion_is_refused(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], amount: bytes
) -> None:
    client, _, made = api
    body = b'{"type": "COST", "instance": "acme:app-dev-g1-0", "amount": ' + amount + b"}"
    response = client.post("/v1/events", content=body, headers={**_JSON, **auth(made["runtime"])})
    assert response.status_code == 422
    says = "amount is NaN" if amount == b"NaN" else "amount is infinite" if amount in (b"Infinity", b"1e400") else None
    assert (says or "a COST event needs a number 'amount' from 0 to 1e+09") in response.json()["message"]
    allowed = client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=auth(made["runtime"])
    )
    assert allowed.json()["decision"] == "ALLOW"  # the budget counted nothing
