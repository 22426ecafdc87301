"""Secrets never reach a stored byte or a log line, whatever shape they come in.

Reproduces issue 15's item 4: secret-shaped dictionary *keys* (in decision arguments, event
fields, decision-log entries and the ``APPROVAL_REQUESTED`` record) were stored as sent; so were
``runId``, the name of a tool the catalog does not know and the id of an instance nobody
declared (into the hash chain, which is never pruned); card numbers, bare or grouped; and a
failed insert logged its whole payload.
"""

from __future__ import annotations

import gzip
import logging

import httpx
import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests.server.serving import auth

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]

KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c"  # an API key, used as a dictionary key
RUN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # a GitHub token sent as a run id
CARD, GROUPED = "4929123456781234", "4929 1234 5678 9012"
TOOL = "AKIAIOSFODNN7EXAMPLE"  # an AWS key id pasted where a tool name goes
NOBODY = "acme:glpat-abcdefghij0123456789"  # an instance id nobody declared, secret-shaped
SECRETS = (KEY, RUN[4:], CARD, GROUPED, TOOL, "glpat-abcdefghij0123456789")


def _everything_stored(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        rows = [
            *connection.execute(sa.select(tables.op_events)).all(),
            *connection.execute(sa.select(tables.change_records)).all(),
            *connection.execute(sa.select(tables.approvals)).all(),
        ]
    return "\n".join(str(tuple(row)) for row in rows)


def test_secrets_in_keys_run_ids_tool_names_instance_ids_and_card_numbers_are_not_stored(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    client, engine, made = api
    runtime = auth(made["runtime"])
    caplog.set_level(logging.DEBUG)
    args = {KEY: True, "note": f"card {GROUPED}", "card": CARD, "number": int(CARD), "nested": {KEY: {"x": 1}}}
    answers = [
        client.post(
            "/v1/decisions",
            json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": args, "runId": RUN},
            headers=runtime,
        ),
        # NEEDS_APPROVAL: an APPROVAL_REQUESTED change record with the call
        client.post(
            "/v1/decisions",
            json={"instance": "acme:app-dev-g1-0", "tool": "payments.refund", "args": args, "runId": RUN},
            headers=runtime,
        ),
        # DENY for a tool the catalog does not know, and for an instance nobody declared: change records
        client.post("/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": TOOL, "args": args}, headers=runtime),
        client.post("/v1/decisions", json={"instance": NOBODY, "tool": "crm.lookup", "args": args}, headers=runtime),
    ]
    # Secret-like arguments raise the risk: the first two need approval (APPROVAL_REQUESTED records).
    assert [a.json()["decision"] for a in answers] == ["NEEDS_APPROVAL", "NEEDS_APPROVAL", "DENY", "DENY"], [
        a.text for a in answers
    ]
    event = {"type": "TOOL_RESULT", "instance": "acme:app-dev-g1-0", "result": args}
    assert client.post("/v1/events", json=event, headers=runtime).status_code == 200
    logs = gzip.compress(f'[{{"decision_id": "d1", "input": {{"{KEY}": "{CARD}", "pan": "{GROUPED}"}}}}]'.encode())
    assert client.post("/logs", content=logs, headers={**runtime, "Content-Encoding": "gzip"}).status_code == 204
    stored = _everything_stored(engine)
    assert "[REDACTED]" in stored
    for secret in SECRETS:
        assert secret not in stored, secret
        assert secret not in caplog.text, secret
    with engine.connect() as connection:  # the undeclared names are still told apart, by digest
        names = connection.execute(sa.select(tables.change_records.c.object_name, tables.change_records.c.after)).all()
    assert any(n.object_name.startswith("unknown instance sha256:") for n in names)
    assert any(str(n.after.get("tool", "")).startswith("unknown tool sha256:") for n in names if n.after)


def test_a_decision_that_cannot_be_stored_logs_no_payload(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    client, engine, made = api
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON op_events BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON op_events FOR EACH ROW EXECUTE FUNCTION refuse()")
    caplog.set_level(logging.DEBUG)
    args = {"token": RUN, KEY: CARD}
    answer = client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": args}, headers=auth(made["runtime"])
    )
    assert answer.status_code == 503 and answer.json()["error"] == "StoreError"
    for secret in (RUN[4:], KEY, CARD):
        assert secret not in caplog.text and secret not in answer.text
