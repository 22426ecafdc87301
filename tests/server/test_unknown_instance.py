"""A decision for an instance that does not exist, through a real server: DENY, recorded under
the caller's tenant like every DENY, change record included."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.state import tables
from tests.server.serving import TRANSPORTS, auth


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_an_unknown_instance_is_denied_and_recorded_under_the_callers_tenant(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]],
) -> None:
    client, engine, made = api
    answer = client.post("/v1/decisions", json={"instance": "acme:nope", "tool": "crm.lookup"}, headers=auth(made["runtime"]))
    assert answer.status_code == 200
    body = answer.json()
    assert (body["decision"], body["reasons"]) == ("DENY", ["unknown instance"])
    e, c = tables.op_events.c, tables.change_records.c
    with engine.connect() as connection:
        event = connection.execute(sa.select(e.tenant, e.instance).where(e.id == body["decisionId"])).one()
        # The chain never forgets: an undeclared name (a typo, or a secret pasted in) goes in as a digest.
        assert connection.execute(sa.select(c.id).where(c.object_name == "acme:nope")).first() is None
        record = connection.execute(
            sa.select(c.tenant, c.type, c.object_kind, c.after).where(c.object_name.startswith("unknown instance sha256:"))
        ).one()
        assert (event.tenant, event.instance) == ("acme", "acme:nope")
        assert (record.tenant, record.type, record.object_kind) == ("acme", "POLICY_EVALUATED", "Instance")
        assert record.after["decisionId"] == body["decisionId"] and record.after["reasons"] == ["unknown instance"]
        assert list(chain.verify(connection)) == []  # every chain, the tenant's included, still verifies
