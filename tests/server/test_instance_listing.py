"""``GET /v1/instances`` filters through a real server: a bad filter is a 422 or a 403 saying
why, never an empty list that looks like an answer."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.server.serving import auth


def test_instances_filter_by_tenant_and_state_and_refuse_what_cannot_match(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]],
) -> None:
    client, _, made = api
    mine = client.get("/v1/instances?tenant=acme&state=provisioning", headers=auth(made["runtime"]))
    assert [i["id"] for i in mine.json()] == ["acme:app-dev-g1-0", "acme:app-dev-g1-1"]
    assert client.get("/v1/instances?state=active", headers=auth(made["runtime"])).json() == []
    other = client.get("/v1/instances?tenant=globex", headers=auth(made["runtime"]))
    assert other.status_code == 403 and other.json()["message"] == "token 'rt' acts for tenant 'acme', not 'globex'"
    bogus = client.get("/v1/instances?state=bogus", headers=auth(made["runtime"]))
    assert bogus.status_code == 422 and bogus.json()["problems"][0]["loc"] == ["query", "state"]
