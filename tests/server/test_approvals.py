"""Approvals over HTTP, through a real uvicorn server on loopback and a real HTTP client: what an
approver sees of a tool call, who sees which approvals, how decisions and filters are checked."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import sqlalchemy as sa

from reconciler.oversight import access
from reconciler.state import tables
from tests.server.serving import NOW, REFUND, SECRET, auth, request_approval

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]


def decide(client: httpx.Client, token: str, approval_id: int, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/approvals/{approval_id}/decision", json=body, headers=auth(token))


def test_a_decision_without_a_justification_is_refused_naming_the_field(api: Api) -> None:
    client, _, made = api
    approval_id = request_approval(client, made["runtime"])
    for body in ({"decision": "DENY"}, {"decision": "APPROVE"}, {"decision": "DENY", "justification": "   "}):
        refused = decide(client, made["operator"], approval_id, body)
        assert refused.status_code == 422, body
        assert [e["loc"] for e in refused.json()["problems"]] == [["body", "justification"]]
    still = client.get(f"/v1/approvals/{approval_id}", headers=auth(made["operator"])).json()
    assert (still["status"], still["decisions"]) == ("PENDING", [])
    denied = decide(client, made["operator"], approval_id, {"decision": "DENY", "justification": " not this invoice "})
    assert denied.status_code == 200 and denied.json()["status"] == "DENIED"
    (given,) = client.get(f"/v1/approvals/{approval_id}", headers=auth(made["operator"])).json()["decisions"]
    assert (given["operator"], given["decision"], given["justification"]) == ("olga", "DENY", "not this invoice")


def test_deciding_an_approval_that_is_no_longer_pending_is_a_conflict(api: Api) -> None:
    client, _, made = api
    approval_id = request_approval(client, made["runtime"])
    assert decide(client, made["operator"], approval_id, {"decision": "APPROVE", "justification": "ok"}).status_code == 200
    for body in ({"decision": "APPROVE", "justification": "again"}, {"decision": "DENY", "justification": "changed my mind"}):
        again = decide(client, made["operator"], approval_id, body)
        assert again.status_code == 409
        assert again.json() == {"error": "Conflict", "message": f"approval {approval_id} is APPROVED, not PENDING"}
    # Missing permission stays 403, whatever state the approval is in.
    by_viewer = decide(client, made["viewer"], approval_id, {"decision": "APPROVE", "justification": "me too"})
    assert by_viewer.status_code == 403 and "holds no roles" in by_viewer.json()["message"]
    by_runtime = decide(client, made["runtime"], approval_id, {"decision": "APPROVE", "justification": "me too"})
    assert by_runtime.status_code == 403
    assert decide(client, made["operator"], 999_999, {"decision": "APPROVE", "justification": "ok"}).status_code == 404


def test_an_approver_sees_the_redacted_tool_call_its_cost_run_and_reasons(api: Api) -> None:
    client, engine, made = api
    approval_id = request_approval(client, made["runtime"])
    shown = client.get(f"/v1/approvals/{approval_id}", headers=auth(made["operator"])).json()
    assert shown["request"] == {
        "instance": "acme:app-dev-g1-0",
        "tool": "payments.refund",
        "args": {"invoice": "INV-1042", "amount": 5, "api_key": "[REDACTED]"},
        "costEstimate": 0.25,
        "runId": "run-7",
    }
    assert any("RED" in reason for reason in shown["reasons"]), shown["reasons"]
    (listed,) = client.get("/v1/approvals", headers=auth(made["operator"])).json()
    assert (listed["id"], listed["request"], listed["reasons"]) == (approval_id, shown["request"], shown["reasons"])
    # Asking again polls the same request; the secret was never stored anywhere an approver reads.
    assert request_approval(client, made["runtime"]) == approval_id
    with engine.connect() as connection:
        stored = [
            *connection.execute(sa.select(tables.approvals)).mappings(),
            *connection.execute(sa.select(tables.change_records)).mappings(),
        ]
    assert SECRET not in json.dumps([dict(r) for r in stored], default=str)


def test_an_instance_scoped_token_sees_only_the_approvals_of_its_instances(api: Api) -> None:
    client, engine, made = api
    own = request_approval(client, made["scoped"])
    other = request_approval(client, made["runtime"], {**REFUND, "instance": "acme:app-dev-g1-1"})
    with engine.begin() as connection:
        gate = connection.execute(
            tables.approvals.insert().returning(tables.approvals.c.id),
            {
                "tenant": "acme",
                "subject_kind": "AgentVersion",
                "subject_name": "app@1.0.0",
                "transition": "CANDIDATE->APPROVED",
                "required": 1,
                "approver_roles": ["oncall"],
                "status": "PENDING",
                "decisions": [],
                "reason": "waiting for 1 approval from oncall",
                "created_at": NOW,
                "expires_at": NOW + dt.timedelta(days=365 * 10),
            },
        ).scalar_one()
    scoped = client.get("/v1/approvals?status=all", headers=auth(made["scoped"])).json()
    assert [a["id"] for a in scoped] == [own]
    assert client.get(f"/v1/approvals/{own}", headers=auth(made["scoped"])).status_code == 200
    for hidden in (other, gate, 999_999):
        missing = client.get(f"/v1/approvals/{hidden}", headers=auth(made["scoped"]))
        assert missing.status_code == 404
        assert missing.json()["message"] == f"approval {hidden} does not exist for the instances of token 'one'"
    with engine.begin() as connection:  # an operator token scoped the same way decides only what it sees
        scoped_operator = access.create(
            connection, "olga-one", "operator", "acme", NOW, operator="olga", instances=["acme:app-dev-g1-0"]
        )
    for hidden in (other, gate):
        refused = decide(client, scoped_operator, hidden, {"decision": "APPROVE", "justification": "ok"})
        assert refused.status_code == 404
        assert refused.json()["message"] == f"approval {hidden} does not exist for the instances of token 'olga-one'"
    assert decide(client, scoped_operator, own, {"decision": "APPROVE", "justification": "ok"}).status_code == 200
    tenant_wide = client.get("/v1/approvals?status=all", headers=auth(made["runtime"])).json()
    assert [a["id"] for a in tenant_wide] == [own, other, gate]
    gate_shown = tenant_wide[2]
    assert (gate_shown["request"], gate_shown["reasons"]) == (None, ["waiting for 1 approval from oncall"])
    assert client.get("/v1/approvals", headers=auth(made["globex"])).json() == []


def test_an_unknown_status_filter_is_refused_naming_the_parameter_and_the_allowed_values(api: Api) -> None:
    client, _, made = api
    bogus = client.get("/v1/approvals?status=bogus", headers=auth(made["operator"]))
    assert bogus.status_code == 422
    (error,) = bogus.json()["problems"]
    assert error["loc"] == ["query", "status"]
    for allowed in ("PENDING", "APPROVED", "DENIED", "EXPIRED", "USED", "ALL"):
        assert allowed in error["msg"]
    approval_id = request_approval(client, made["runtime"])
    assert decide(client, made["operator"], approval_id, {"decision": "APPROVE", "justification": "ok"}).status_code == 200
    allowed = client.post("/v1/decisions", json=REFUND, headers=auth(made["runtime"])).json()
    assert (allowed["decision"], allowed["approvalId"]) == ("ALLOW", approval_id)
    for status, expected in (("used", [approval_id]), ("USED", [approval_id]), ("pending", []), ("All", [approval_id])):
        listed = client.get(f"/v1/approvals?status={status}", headers=auth(made["operator"]))
        assert listed.status_code == 200 and [a["id"] for a in listed.json()] == expected, status
    assert client.get("/v1/approvals", headers=auth(made["operator"])).json() == []  # pending by default
