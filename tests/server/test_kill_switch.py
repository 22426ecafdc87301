"""The tenant kill switch through a real server: it holds instances created after it was pulled,
needs ``tenants:<control>``, and resuming releases only what it held."""

from __future__ import annotations

import concurrent.futures

import httpx
import sqlalchemy as sa

from reconciler.desired import repository
from reconciler.reconcile import running
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.server.serving import auth, tenant_fleet


def _ask(client: httpx.Client, token: str, instance: str) -> dict[str, object]:
    response = client.post("/v1/decisions", json={"instance": instance, "tool": "crm.lookup"}, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _states(engine: sa.Engine) -> dict[str, tuple[str, str | None]]:
    i = tables.instances.c
    with engine.connect() as connection:
        rows = connection.execute(sa.select(i.id, i.state, i.held_by).where(i.tenant == "acme")).all()
    return {r.id: (r.state, r.held_by) for r in rows}


def test_the_kill_switch_holds_instances_created_after_it_and_resume_releases_only_what_it_held(
    api: tuple[httpx.Client, sa.Engine, dict[str, str]], git_repo: GitRepo
) -> None:
    client, engine, made = api
    held = client.post(
        "/v1/instances/acme:app-dev-g1-0/controls",
        json={"control": "pause", "reason": "on its own"},
        headers=auth(made["operator"]),
    )
    assert held.status_code == 200
    refused = client.post("/v1/tenants/acme/controls", json={"control": "pause", "reason": "x"}, headers=auth(made["viewer"]))
    assert refused.status_code == 403 and "lacks permission tenants:pause" in refused.json()["message"]

    pulled = client.post(
        "/v1/tenants/acme/controls", json={"control": "pause", "reason": "breach"}, headers=auth(made["operator"])
    )
    assert pulled.status_code == 200
    assert [(i["instance"], i["after"]) for i in pulled.json()["instances"]] == [("acme:app-dev-g1-1", "PAUSED")]

    # Git adds a replica while the switch is pulled: the new instance is created held by it, so
    # its row and its decisions tell one truth, and a heartbeat does not activate it.
    git_repo.commit({"fleet/acme.yaml": tenant_fleet("acme").replace("replicas: 2", "replicas: 3")}, author=scenario.AUTHOR)
    running.Reconciler(engine, repository.Repository(git_repo.path), "fleet").apply("main")
    assert _states(engine)["acme:app-dev-g1-2"] == ("PAUSED", "tenant-pause")
    beat = client.post("/v1/events", json={"type": "HEARTBEAT", "instance": "acme:app-dev-g1-2"}, headers=auth(made["runtime"]))
    assert beat.status_code == 200
    listed = {i["id"]: i for i in client.get("/v1/instances", headers=auth(made["runtime"])).json()}
    assert (listed["acme:app-dev-g1-2"]["state"], listed["acme:app-dev-g1-2"]["tenant_hold"]) == ("PAUSED", "pause")
    late = _ask(client, made["runtime"], "acme:app-dev-g1-2")
    assert late["decision"] == "DENY" and late["reasons"] == ["instance acme:app-dev-g1-2 is PAUSED"]
    assert _ask(client, made["globex"], "globex:app-dev-g1-0")["decision"] == "ALLOW"  # another tenant

    released = client.post(
        "/v1/tenants/acme/controls", json={"control": "resume", "reason": "fixed"}, headers=auth(made["operator"])
    )
    assert released.status_code == 200
    assert [(i["instance"], i["before"], i["after"]) for i in released.json()["instances"]] == [
        ("acme:app-dev-g1-1", "PAUSED", "PROVISIONING"),  # never heard from: it waits for its first heartbeat
        ("acme:app-dev-g1-2", "PAUSED", "ACTIVE"),  # its runtime has reported: it started
    ]
    assert _states(engine)["acme:app-dev-g1-0"] == ("PAUSED", "pause")  # held on its own: stays held
    assert {i["tenant_hold"] for i in client.get("/v1/instances", headers=auth(made["runtime"])).json()} == {None}
    assert _ask(client, made["runtime"], "acme:app-dev-g1-2")["decision"] == "ALLOW"
    assert _ask(client, made["runtime"], "acme:app-dev-g1-0")["decision"] == "DENY"

    again = client.post("/v1/tenants/acme/controls", json={"control": "resume", "reason": "x"}, headers=auth(made["operator"]))
    assert again.status_code == 409 and "is not held by its kill switch" in again.json()["message"]
    quarantined = client.post(
        "/v1/tenants/acme/controls", json={"control": "quarantine", "reason": "y"}, headers=auth(made["operator"])
    )
    assert quarantined.status_code == 200
    softer = client.post("/v1/tenants/acme/controls", json={"control": "pause", "reason": "z"}, headers=auth(made["operator"]))
    assert softer.status_code == 409 and softer.json()["message"] == "tenant 'acme' is quarantined; resume it before pausing it"
    assert (
        client.post(
            "/v1/tenants/acme/controls", json={"control": "resume", "reason": "ok"}, headers=auth(made["operator"])
        ).status_code
        == 200
    )

    c = tables.change_records.c
    with engine.connect() as connection:
        records = connection.execute(
            sa.select(c.type, c.operator)
            .where(c.object_kind == "Tenant", c.object_name == "acme", c.operator.is_not(None))
            .order_by(c.id)
        ).all()
    assert [(r.type, r.operator) for r in records] == [
        ("EMERGENCY_PAUSE", "olga"),
        ("EMERGENCY_RELEASE", "olga"),
        ("EMERGENCY_QUARANTINE", "olga"),
        ("EMERGENCY_RELEASE", "olga"),
    ]


def test_kill_switches_pulled_at_once_hold_the_tenant_once(api: tuple[httpx.Client, sa.Engine, dict[str, str]]) -> None:
    # Two operators pull it together: the tenant's row serialises them (without it, PostgreSQL
    # let both insert the hold and one got a 500).
    client, engine, made = api
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda n: (
                    client.post(
                        "/v1/tenants/acme/controls", json={"control": "pause", "reason": f"r{n}"}, headers=auth(made["operator"])
                    ).status_code
                ),
                range(8),
            )
        )
    assert answers == [200] * 8
    with engine.connect() as connection:
        assert connection.execute(sa.select(tables.tenant_holds.c.control)).scalars().all() == ["pause"]
