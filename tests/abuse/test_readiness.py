"""``/readyz`` says not ready, and why, while decisions cannot be recorded.

Reproduces issue 15's item 7: with the store refusing writes (read-only, or full) every decision
was a 503 while ``/readyz`` answered 200, so an orchestrator kept sending traffic to a replica
that could decide nothing. A trigger that refuses every op event stands in for the full disk.
"""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.server.serving import auth

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]

ASK = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}


def _refuse_writes(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON op_events BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON op_events FOR EACH ROW EXECUTE FUNCTION refuse()")


def test_readyz_is_not_ready_while_decisions_cannot_be_recorded_and_ready_again_after(api: Api) -> None:
    client, engine, made = api
    runtime = auth(made["runtime"])
    assert client.post("/v1/decisions", json=ASK, headers=runtime).status_code == 200
    assert client.get("/readyz").status_code == 200
    _refuse_writes(engine)
    refused = client.post("/v1/decisions", json=ASK, headers=runtime)
    assert refused.status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["ready"] is False and "decisions cannot be recorded" in ready.json()["reason"]
    assert "full" in ready.json()["reason"] or "space" in ready.json()["reason"]
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "DROP TRIGGER refuse" if engine.dialect.name == "sqlite" else "DROP TRIGGER refuse ON op_events"
        )
    assert client.post("/v1/decisions", json=ASK, headers=runtime).status_code == 200
    assert client.get("/readyz").status_code == 200
