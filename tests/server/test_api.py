"""The HTTP API through a real uvicorn server on loopback and a real HTTP client."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import fastapi
import httpx
import pytest
import sqlalchemy as sa

from reconciler.oversight import access
from reconciler.server import app as server_app
from reconciler.server import decisions
from reconciler.state import database, tables
from tests.server.serving import NOW, TRANSPORTS, Server, auth


def test_health_readiness_and_openapi(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, _, _ = api
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and len(ready.json()["appliedSha"]) == 40
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/decisions", "/v1/approvals/{approval_id}/decision", "/v1/instances/{instance_id}/controls", "/v1/events"} <= set(
        paths
    )


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Basic abc"}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
        ({"Authorization": "Bearer arm_nope"}, "unknown token"),
        ("expired", "token 'old' expired"),
        ("revoked", "token 'gone' was revoked"),
    ],
)
def test_requests_without_a_usable_token_get_401_saying_why(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], headers: Any, detail: str
) -> None:
    client, _, made = api
    if isinstance(headers, str):
        headers = auth(made[headers])
    response = client.post("/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthenticated" and response.json()["message"].startswith(detail)


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_decisions_for_own_instances_only(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, engine, made = api
    ask = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"q": 1}}
    allowed = client.post("/v1/decisions", json=ask, headers=auth(made["runtime"]))
    assert allowed.status_code == 200
    body = allowed.json()
    assert (body["decision"], body["reasons"]) == ("ALLOW", ["within the envelope"])
    assert body["envelope"]["approvalAbove"] == "YELLOW" and len(body["policyRevision"]) == 40
    # Another tenant's instance is answered as one that does not exist: nothing to probe.
    cross = client.post("/v1/decisions", json=ask, headers=auth(made["globex"]))
    missing = client.post("/v1/decisions", json={**ask, "instance": "acme:app-dev-g9-0"}, headers=auth(made["globex"]))
    assert cross.status_code == missing.status_code == 200
    assert cross.json()["decision"] == missing.json()["decision"] == "DENY"
    assert [r.replace("g1", "g9") for r in cross.json()["reasons"]] == missing.json()["reasons"]
    scoped = client.post("/v1/decisions", json={**ask, "instance": "acme:app-dev-g1-1"}, headers=auth(made["scoped"]))
    assert scoped.status_code == 403
    bad = client.post("/v1/decisions", json={"instance": "acme:app-dev-g1-0"}, headers=auth(made["runtime"]))
    assert bad.status_code == 422
    with engine.connect() as connection:
        recorded = connection.execute(sa.select(sa.func.count()).where(tables.op_events.c.type == "DECISION")).scalar_one()
    assert recorded == 3  # the two DENYs of unknown instances (under globex), and no refused request
    metrics = client.get("/metrics").text
    assert 'arm_decisions_total{decision="ALLOW"} 1' in metrics


def test_an_approval_requested_by_a_decision_is_decided_over_http(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, _, made = api
    ask = {"instance": "acme:app-dev-g1-0", "tool": "payments.refund", "args": {"amount": 5}}
    first = client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).json()
    assert first["decision"] == "NEEDS_APPROVAL"
    approval = client.get(f"/v1/approvals/{first['approvalId']}", headers=auth(made["runtime"])).json()
    assert (approval["status"], approval["subjectKind"], approval["approverRoles"]) == ("PENDING", "ToolCall", ["oncall"])
    assert not {"reason", "roles", "approver_roles", "subject_kind"} & set(approval)  # one style, each fact once
    assert client.get(f"/v1/approvals/{first['approvalId']}", headers=auth(made["globex"])).status_code == 404
    approve = {"decision": "APPROVE", "justification": "refund ok"}
    by_runtime = client.post(f"/v1/approvals/{first['approvalId']}/decision", json=approve, headers=auth(made["runtime"]))
    assert by_runtime.status_code == 403
    by_viewer = client.post(f"/v1/approvals/{first['approvalId']}/decision", json=approve, headers=auth(made["viewer"]))
    assert by_viewer.status_code == 403 and "holds no roles" in by_viewer.json()["message"]
    cross = client.post(f"/v1/approvals/{first['approvalId']}/decision", json=approve, headers=auth(made["globex-operator"]))
    assert cross.status_code == 404  # another tenant's approval is not revealed, as GET does not reveal it
    decided = client.post(
        f"/v1/approvals/{first['approvalId']}/decision",
        json={"decision": "APPROVE", "justification": "ok"},
        headers=auth(made["operator"]),
    )
    assert decided.json() == {"id": first["approvalId"], "status": "APPROVED", "approvals": 1, "required": 1}
    granted = client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).json()
    assert (granted["decision"], granted["approvalId"]) == ("ALLOW", first["approvalId"])
    assert client.get("/v1/approvals?status=USED", headers=auth(made["operator"])).json()[0]["id"] == first["approvalId"]


def test_emergency_controls_and_the_tenant_kill_switch(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, _, made = api
    pause = {"control": "pause", "reason": "incident 7"}
    assert client.post("/v1/instances/acme:app-dev-g1-0/controls", json=pause, headers=auth(made["runtime"])).status_code == 403
    # Another tenant's instance is answered as a missing one: 404, saying the same.
    cross = client.post("/v1/instances/acme:app-dev-g1-0/controls", json=pause, headers=auth(made["globex-operator"]))
    missing = client.post("/v1/instances/acme:app-dev-g9-0/controls", json=pause, headers=auth(made["globex-operator"]))
    assert cross.status_code == missing.status_code == 404
    assert cross.json()["message"].replace("g1", "g9") == missing.json()["message"]
    client.post("/v1/events", json={"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}, headers=auth(made["runtime"]))
    done = client.post("/v1/instances/acme:app-dev-g1-0/controls", json=pause, headers=auth(made["operator"]))
    assert done.json() == {"instance": "acme:app-dev-g1-0", "before": "ACTIVE", "after": "PAUSED"}
    paused = client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=auth(made["runtime"])
    ).json()
    assert paused["reasons"] == ["instance acme:app-dev-g1-0 is PAUSED"]
    illegal = client.post("/v1/instances/acme:app-dev-g1-0/controls", json={"control": "resume"}, headers=auth(made["viewer"]))
    assert illegal.status_code == 403
    decision = client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-1", "tool": "crm.lookup"}, headers=auth(made["runtime"])
    ).json()
    assert decision["decision"] == "ALLOW"
    kill = client.post(
        "/v1/tenants/acme/controls", json={"control": "quarantine", "reason": "breach"}, headers=auth(made["operator"])
    )
    assert [(i["instance"], i["before"]) for i in kill.json()["instances"]] == [
        ("acme:app-dev-g1-0", "PAUSED"),
        ("acme:app-dev-g1-1", "PROVISIONING"),
    ]
    stuck = client.post("/v1/instances/acme:app-dev-g1-0/controls", json={"control": "resume"}, headers=auth(made["operator"]))
    assert stuck.status_code == 409 and stuck.json()["message"].startswith("Instance cannot go from QUARANTINED to ACTIVE")
    denied = client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-1", "tool": "crm.lookup"}, headers=auth(made["runtime"])
    ).json()
    assert denied["decision"] == "DENY" and denied["reasons"] == ["instance acme:app-dev-g1-1 is QUARANTINED"]
    other = client.post("/v1/tenants/globex/controls", json={"control": "pause"}, headers=auth(made["operator"]))
    assert other.status_code == 403


def test_heartbeats_activate_and_cost_events_feed_budgets(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, engine, made = api
    listed = client.get("/v1/instances?environment=dev", headers=auth(made["runtime"])).json()
    assert [(i["id"], i["state"]) for i in listed] == [
        ("acme:app-dev-g1-0", "PROVISIONING"),
        ("acme:app-dev-g1-1", "PROVISIONING"),
    ]
    assert [i["id"] for i in client.get("/v1/instances", headers=auth(made["scoped"])).json()] == ["acme:app-dev-g1-0"]
    beat = client.post("/v1/events", json={"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}, headers=auth(made["runtime"]))
    assert beat.json() == {"instance": "acme:app-dev-g1-0", "type": "HEARTBEAT", "state": "ACTIVE"}
    assert client.get("/v1/instances?state=ACTIVE", headers=auth(made["runtime"])).json()[0]["id"] == "acme:app-dev-g1-0"
    spend = {
        "type": "COST",
        "instance": "acme:app-dev-g1-0",
        "amount": 0.9,
        "runId": "r1",
        "token": "sk-abcdefghijklmnopqrstuvwxyz",
    }
    assert client.post("/v1/events", json=spend, headers=auth(made["runtime"])).status_code == 200
    over = client.post(
        "/v1/decisions",
        json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "costEstimate": 0.2},
        headers=auth(made["runtime"]),
    )
    assert over.json()["reasons"] == ["BUDGET_EXCEEDED: today would reach 1.10, above the daily budget 1.00"]
    with engine.connect() as connection:
        payload = connection.execute(sa.select(tables.op_events.c.payload).where(tables.op_events.c.type == "COST")).scalar_one()
    assert payload == {"amount": 0.9, "runId": "r1", "token": "[REDACTED]"}
    assert (
        client.post(
            "/v1/events", json={"type": "NAP", "instance": "acme:app-dev-g1-0"}, headers=auth(made["runtime"])
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/v1/events", json={"type": "COST", "instance": "acme:app-dev-g1-0", "amount": -1}, headers=auth(made["runtime"])
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/v1/events", json={"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}, headers=auth(made["globex"])
        ).status_code
        == 404
    )


def test_an_unreachable_store_answers_503_and_decides_nothing() -> None:
    engine = database.connect("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    with Server(server_app.create_app(engine)) as base, httpx.Client(base_url=base, timeout=10) as client:
        response = client.post("/v1/decisions", json={"instance": "i", "tool": "t"}, headers=auth("arm_x"))
        assert response.status_code == 503
        assert response.json()["error"] == "StoreError"
        assert client.get("/readyz").status_code == 503


def test_the_opa_bundle_data_api_and_decision_logs(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    import gzip
    import io
    import json
    import tarfile

    client, engine, made = api
    response = client.get("/v1/bundles/arm.tar.gz", headers=auth(made["runtime"]))
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(".manifest"))  # type: ignore[arg-type]
        data = json.load(tar.extractfile("data.json"))  # type: ignore[arg-type]
    with engine.connect() as connection:
        applied, generation = connection.execute(
            sa.select(tables.fleet_state.c.applied_sha, tables.fleet_state.c.generation)
        ).one()
    assert manifest == {"revision": applied, "roots": ["arm"]}
    assert "policies/arm/decision.rego" in names and "policies/arm/gates.rego" in names
    assert not any(name.endswith("_test.rego") for name in names)
    assert data["arm"]["fleet"]["envelopes"]["acme"]["app@1.0.0"]["approvalAbove"] == "YELLOW"
    assert data["arm"]["fleet"]["tools"]["acme"]["payments.refund"]["risk"] == "RED"
    etag = response.headers["etag"]
    assert etag == f'"{applied}:{generation}:acme"'
    assert client.get("/v1/bundles/arm.tar.gz", headers={**auth(made["runtime"]), "If-None-Match": etag}).status_code == 304
    assert client.get("/v1/bundles/arm.tar.gz").status_code == 401

    probe = {
        "input": {
            "steps": [
                {
                    "id": "s",
                    "kind": "AgentVersion",
                    "from": "TESTING",
                    "to": "CANDIDATE",
                    "version": {"name": "v", "lifecycle": "TESTING", "evaluations": [], "integrity": "OK"},
                }
            ]
        }
    }
    answered = client.post("/v1/data/arm/gates/results", json=probe, headers=auth(made["runtime"])).json()
    assert answered["result"]["s"]["allowed"] is False
    assert client.post("/v1/data/arm/no/such/rule", json={"input": {}}, headers=auth(made["runtime"])).json() == {}
    for method in ("PUT", "PATCH", "DELETE"):
        refused = client.request(method, "/v1/data/arm/x", json={}, headers=auth(made["operator"]))
        assert refused.status_code == 405 and "only through Git" in refused.json()["message"]
    assert client.put("/v1/policies/evil", content="package evil", headers=auth(made["operator"])).status_code == 405

    logs = [
        {
            "decision_id": "d1",
            "path": "arm/decision/result",
            "input": {"args": {"password": "hunter2!!"}},
            "result": {"decision": "ALLOW"},
        }
    ]
    uploaded = client.post(
        "/logs", content=gzip.compress(json.dumps(logs).encode()), headers={**auth(made["runtime"]), "Content-Encoding": "gzip"}
    )
    assert uploaded.status_code == 204
    with engine.connect() as connection:
        stored = connection.execute(
            sa.select(tables.op_events.c.tenant, tables.op_events.c.payload).where(tables.op_events.c.type == "OPA_DECISION")
        ).one()
    assert stored.tenant == "acme" and stored.payload["input"]["args"]["password"] == "[REDACTED]"


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_concurrent_decisions_are_all_stored_before_they_are_answered(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client, engine, made = api
    base = str(client.base_url)

    def one(n: int) -> dict[str, Any]:
        with httpx.Client(base_url=base, timeout=30) as own:
            body = {"instance": f"acme:app-dev-g1-{n % 2}", "tool": "crm.lookup", "args": {"n": n}, "costEstimate": 0.001}
            response = own.post("/v1/decisions", json=body, headers=auth(made["runtime"]))
            assert response.status_code == 200
            return response.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, range(64)))
    assert {a["decision"] for a in answers} == {"ALLOW"}
    ids = [a["decisionId"] for a in answers]
    assert len(set(ids)) == 64
    with engine.connect() as connection:
        stored = set(connection.execute(sa.select(tables.op_events.c.id).where(tables.op_events.c.type == "DECISION")).scalars())
    assert set(ids) <= stored and len(stored) == 64


def test_status_and_bundles_show_only_the_tokens_tenant(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    import io
    import json
    import tarfile

    client, _, made = api
    client.post("/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=auth(made["runtime"]))
    status = client.get("/v1/status", headers=auth(made["globex"])).json()
    assert all(c["tenant"] == "globex" for c in status["conditions"])
    assert status["objects"]["Tenant"] == 1 and all(run["errors"] == [] for run in status["lastRuns"])
    assert status["policy"] == {"engine": "embedded", "url": None, "loadedRevision": status["appliedSha"], "failure": None}
    bundle = client.get("/v1/bundles/arm.tar.gz", headers=auth(made["globex"]))
    with tarfile.open(fileobj=io.BytesIO(bundle.content), mode="r:gz") as tar:
        data = json.load(tar.extractfile("data.json"))  # type: ignore[arg-type]
    assert set(data["arm"]["fleet"]["envelopes"]) == {"globex"} and set(data["arm"]["fleet"]["tools"]) == {"globex"}
    assert bundle.headers["etag"] != client.get("/v1/bundles/arm.tar.gz", headers=auth(made["runtime"])).headers["etag"]


@pytest.mark.parametrize(("content", "headers"), [(b"\x1f\x8bnot gzip", {}), (b"\xff\xfe", {}), (b'{"not": "a list"}', {})])
def test_bad_decision_log_uploads_are_refused_with_422(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], content: bytes, headers: dict[str, str]
) -> None:
    client, _, made = api
    response = client.post("/logs", content=content, headers={**auth(made["runtime"]), **headers})
    assert response.status_code == 422


class _Later:
    """A clock two hours ahead, so the server's sweep finds the approval past its TTL."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)

    def monotonic(self) -> float:
        return time.monotonic()


def test_the_server_expires_approvals_past_their_ttl(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, engine, made = api
    ask = {"instance": "acme:app-dev-g1-0", "tool": "payments.refund", "args": {"amount": 7}}
    approval_id = client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).json()["approvalId"]
    assert client.get(f"/v1/approvals/{approval_id}", headers=auth(made["runtime"])).json()["status"] == "PENDING"
    with Server(server_app.create_app(engine, clock=_Later(), sweep_seconds=0.05)) as later:  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = httpx.get(f"{later}/v1/approvals/{approval_id}", headers=auth(made["runtime"])).json()["status"]
            if status == "EXPIRED":
                break
            time.sleep(0.05)
    assert status == "EXPIRED"
    with engine.connect() as connection:
        c = tables.change_records.c
        expired = connection.execute(sa.select(c.object_name).where(c.type == "APPROVAL_EXPIRED")).scalars().all()
    assert expired == [str(approval_id)]


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_a_revoked_token_is_refused_within_a_second(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, engine, made = api
    ask = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}
    assert client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).status_code == 200  # now cached
    with engine.begin() as connection:
        access.revoke(connection, "rt", NOW)
    revoked_at = time.monotonic()
    while (response := client.post("/v1/decisions", json=ask, headers=auth(made["runtime"]))).status_code == 200:
        assert time.monotonic() - revoked_at < 3, "the revoked token was still accepted after 3 s"
        time.sleep(0.05)
    assert response.status_code == 401 and "revoked" in response.json()["message"]


_MIRROR = fastapi.FastAPI()


@_MIRROR.post("/v1/decisions")
def _mirrored(body: decisions.DecisionBody) -> None:
    """FastAPI's own validation of the decision body, to compare the raw route's 422s with."""


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"instance": "acme:app-dev-g1-0"}, [{"type": "missing", "loc": ["body", "tool"], "msg": "Field required"}]),
        (
            {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "extra": 1},
            [{"type": "extra_forbidden", "loc": ["body", "extra"], "msg": "Extra inputs are not permitted"}],
        ),
        (
            {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "costEstimate": -1},
            [
                {
                    "type": "greater_than_equal",
                    "loc": ["body", "costEstimate"],
                    "msg": "Input should be greater than or equal to 0",
                }
            ],
        ),
        (
            {"instance": 7, "tool": "crm.lookup", "args": []},
            [
                {"type": "string_type", "loc": ["body", "instance"], "msg": "Input should be a valid string"},
                {"type": "dict_type", "loc": ["body", "args"], "msg": "Input should be a valid dictionary"},
            ],
        ),
        ("not json", [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error:"}]),
    ],
)
def test_invalid_decision_requests_get_fastapis_422_problems(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], body: Any, detail: list[dict[str, Any]]
) -> None:
    client, _, made = api
    headers = {**auth(made["runtime"]), "Content-Type": "application/json"}
    content = body if isinstance(body, str) else __import__("json").dumps(body)
    response = client.post("/v1/decisions", content=content, headers=headers)
    assert response.status_code == 422
    got = response.json()
    assert got["error"] == "ValidationError" and all(
        set(e) == {"type", "loc", "msg"} for e in got["problems"]
    )  # the input is never echoed
    assert [
        {k: e[k] if k != "msg" else e[k][: len(d[k])] for k in ("type", "loc", "msg")}
        for e, d in zip(got["problems"], detail, strict=True)
    ] == detail
    if detail[0]["type"] != "json_invalid":
        with Server(_MIRROR) as mirror:  # the problems FastAPI itself finds with the same model
            mirrored = httpx.post(f"{mirror}/v1/decisions", content=content, headers=headers).json()["detail"]
            assert [{k: e[k] for k in ("type", "loc", "msg")} for e in mirrored] == got["problems"]


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_the_decision_route_answers_401_403_and_counts_like_the_rest(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, _, made = api
    ask = {"instance": "acme:app-dev-g1-1", "tool": "crm.lookup"}
    assert client.post("/v1/decisions", json=ask).json() == {
        "error": "Unauthenticated",
        "message": "missing bearer token: send 'Authorization: Bearer <token>' (armctl token create)",
    }
    forbidden = client.post("/v1/decisions", json=ask, headers=auth(made["scoped"]))
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "error": "Forbidden",
        "message": "token 'one' may not ask decisions for instance 'acme:app-dev-g1-1'",
    }
    assert client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).status_code == 200
    metrics = client.get("/metrics").text
    for line in (
        'arm_http_requests_total{route="decisions",status="401"} 1',
        'arm_http_requests_total{route="decisions",status="403"} 1',
        'arm_http_requests_total{route="decisions",status="200"} 1',
    ):
        assert line in metrics
    assert "arm_op_event_write_seconds_count" in metrics


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_an_oversized_decision_body_gets_413_and_is_not_decided(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    client, engine, made = api
    with engine.connect() as connection:
        before = connection.execute(sa.select(sa.func.count()).select_from(tables.op_events)).scalar_one()
    big = {"instance": "acme:app-dev-g1-1", "tool": "crm.lookup", "args": {"blob": "x" * decisions.MAX_BODY}}
    response = client.post("/v1/decisions", json=big, headers=auth(made["runtime"]))
    assert response.status_code == 413
    assert str(decisions.MAX_BODY) in response.json()["message"]
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tables.op_events)).scalar_one() == before
    assert 'arm_http_requests_total{route="decisions",status="413"} 1' in client.get("/metrics").text


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_under_load_every_answered_decision_is_stored_and_nothing_else(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client, engine, made = api
    base = str(client.base_url)
    tools = ["crm.lookup", "web.scrape", "crm.lookup", "payments.refund"]  # ALLOW, DENY, ALLOW, NEEDS_APPROVAL

    def one(n: int) -> dict[str, Any]:
        with httpx.Client(base_url=base, timeout=30) as own:
            body = {"instance": f"acme:app-dev-g1-{n % 2}", "tool": tools[n % 4], "args": {"n": n % 40}}
            response = own.post("/v1/decisions", json=body, headers=auth(made["runtime"]))
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, range(160)))
    assert {a["decision"] for a in answers} == {"ALLOW", "DENY", "NEEDS_APPROVAL"}
    with engine.connect() as connection:
        stored = set(connection.execute(sa.select(tables.op_events.c.id).where(tables.op_events.c.type == "DECISION")).scalars())
        denies = connection.execute(
            sa.select(sa.func.count()).where(tables.change_records.c.type.in_(["POLICY_EVALUATED", "LOOP_DETECTED"]))
        ).scalar_one()
        from reconciler.audit import chain

        assert list(chain.verify(connection)) == []
    assert stored == {a["decisionId"] for a in answers}
    assert denies == sum(1 for a in answers if a["decision"] == "DENY")
    metrics = client.get("/metrics").text
    counted = sum(int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("arm_decisions_total{"))
    assert counted == len(stored) == 160
