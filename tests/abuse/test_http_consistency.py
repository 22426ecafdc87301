"""Every POST route takes JSON alike, and every error has one shape (issue 15, item 16).

``/v1/decisions`` took an unlabelled JSON body while events, approvals and controls answered
422 without ``Content-Type: application/json``; errors came as ``{"detail": ...}`` for 401, 404
and 422 and as ``{"error", "message"}`` for 403 and 409.
"""

from __future__ import annotations

import json

import httpx
import sqlalchemy as sa

from tests.server.serving import auth

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]


def _post(client: httpx.Client, path: str, body: object, token: str | None, content_type: str | None = None) -> httpx.Response:
    headers = auth(token) if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    return client.post(path, content=json.dumps(body).encode(), headers=headers)


def test_json_is_taken_whatever_its_label_and_every_error_has_one_shape(api: Api) -> None:
    client, _, made = api
    runtime, operator = made["runtime"], made["operator"]
    for label in (None, "text/plain", "application/x-www-form-urlencoded"):
        beat = _post(client, "/v1/events", {"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}, runtime, label)
        assert beat.status_code == 200, beat.text
        paused = _post(client, "/v1/instances/acme:app-dev-g1-1/controls", {"control": "pause"}, operator, label)
        resumed = _post(client, "/v1/instances/acme:app-dev-g1-1/controls", {"control": "resume"}, operator, label)
        assert (paused.status_code, resumed.status_code) == (200, 200), (paused.text, resumed.text)
        decided = _post(client, "/v1/decisions", {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, runtime, label)
        assert decided.status_code == 200
    asked = _post(client, "/v1/decisions", {"instance": "acme:app-dev-g1-0", "tool": "payments.refund"}, runtime).json()
    approval = asked["approvalId"]
    approved = _post(client, f"/v1/approvals/{approval}/decision", {"decision": "APPROVE", "justification": "ok"}, operator)
    assert approved.status_code == 200, approved.text
    errors = {
        401: _post(client, "/v1/events", {}, None),
        403: _post(client, "/v1/instances/acme:app-dev-g1-0/controls", {"control": "pause"}, runtime),
        404: _post(client, "/v1/instances/acme:nope/controls", {"control": "pause"}, operator),
        409: _post(client, f"/v1/approvals/{approval}/decision", {"decision": "DENY", "justification": "late"}, operator),
        413: client.post("/v1/events", content=b"{" + b" " * 70_000 + b"}", headers=auth(runtime)),
        422: _post(client, "/v1/events", {"type": "NOPE", "instance": "acme:app-dev-g1-0"}, runtime),
    }
    for status, answer in errors.items():
        assert answer.status_code == status, (status, answer.text)
        body = answer.json()
        assert set(body) - {"problems"} == {"error", "message"}, (status, body)
        assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"]
    assert errors[422].json()["problems"][0]["loc"] == ["body", "type"]
