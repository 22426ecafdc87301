"""What each kind of token may do, through a real server: operators act by controls and
approvals, never by asking decisions or sending events in a runtime's place."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from tests.server.serving import TRANSPORTS, auth


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
@pytest.mark.parametrize("who", ["operator", "viewer"])
def test_operator_tokens_may_not_ask_decisions_or_send_events_whatever_their_roles(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], who: str
) -> None:
    client, _, made = api
    decision = client.post("/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=auth(made[who]))
    assert decision.status_code == 403
    assert decision.json()["message"].endswith("is an operator token; asking decisions needs a runtime token")
    # A cost tick from an operator would stop the instance through its budget, a heartbeat activate it.
    for event in (
        {"type": "COST", "instance": "acme:app-dev-g1-0", "amount": 1000},
        {"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"},
    ):
        sent = client.post("/v1/events", json=event, headers=auth(made[who]))
        assert sent.status_code == 403
        assert sent.json()["message"].endswith("is an operator token; sending events needs a runtime token")
    logs = client.post("/logs", content=b"[]", headers=auth(made[who]))
    assert logs.status_code == 403 and logs.json()["message"].endswith("sending decision logs needs a runtime token")
    listed = client.get("/v1/instances", headers=auth(made["runtime"])).json()
    assert {i["id"]: i["state"] for i in listed}["acme:app-dev-g1-0"] == "PROVISIONING"  # no heartbeat counted
    allowed = client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=auth(made["runtime"])
    )
    assert allowed.json()["decision"] == "ALLOW"  # no cost counted against its budget
