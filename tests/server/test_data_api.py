"""OPA's Data API and the OPA bundle, served over loopback: one policy and one fleet data document,
deciding alike through ``POST /v1/decisions``, the Data API, a sidecar's bundle and an OPA engine."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from reconciler.decisions import deciding
from reconciler.desired import repository
from reconciler.oversight import access
from reconciler.policy import engines, goopa, opa
from reconciler.reconcile import running
from reconciler.server import app as server_app
from reconciler.state import database, fleetstate
from tests.conftest import GitRepo
from tests.policy.opa_double import OpaDouble
from tests.realopa import require
from tests.reconcile import scenario
from tests.server.serving import NOW, Server, auth, tenant_fleet

#: A fleet rule that reads the fleet data: a call of a tool the tenant's catalog says writes is denied.
WRITES_RULE = """package arm.ext.catalog

import rego.v1

deny contains msg if {
	tool := data.arm.fleet.tools[input.instance.tenant][input.tool.name]
	tool.writes
	msg := sprintf("%s writes, says the %s catalog", [input.tool.name, input.instance.tenant])
}
"""

FILES = {
    "fleet/acme.yaml": tenant_fleet("acme"),
    "fleet/globex.yaml": tenant_fleet("globex"),
    "fleet/policies/catalog.rego": WRITES_RULE,
}


@dataclass
class Served:
    client: httpx.Client
    db: sa.Engine
    repo: GitRepo
    reconciler: running.Reconciler
    acme: str
    globex: str

    def apply(self, files: dict[str, str | bytes | None]) -> str:
        sha = self.repo.commit(files, author=scenario.AUTHOR)
        self.reconciler.apply("main")
        return sha


def serve(git_repo: GitRepo, db: sa.Engine, decider: deciding.Decider | None = None) -> Iterator[Served]:
    git_repo.commit(FILES, author=scenario.AUTHOR)
    reconciler = running.Reconciler(db, repository.Repository(git_repo.path), "fleet")
    reconciler.apply("main")
    with db.begin() as connection:
        acme = access.create(connection, "rt", "runtime", "acme", NOW)
        globex = access.create(connection, "gx", "runtime", "globex", NOW)
    app = server_app.create_app(db, decider=decider, sweep_seconds=None, policy_seconds=None)
    with Server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield Served(client, db, git_repo, reconciler, acme, globex)


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def served(git_repo: GitRepo, db: sa.Engine) -> Iterator[Served]:
    yield from serve(git_repo, db)


def pulled(served: Served, token: str) -> tuple[dict[str, Any], dict[str, str], Any]:
    """(manifest, modules, data) of the bundle a sidecar with ``token`` pulls."""
    response = served.client.get("/v1/bundles/arm.tar.gz", headers=auth(token))
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    modules = {name: text for name, text in files.items() if name.endswith(".rego")}
    return json.loads(files[".manifest"]), modules, json.loads(files["data.json"])


def sidecar_input(
    decision: dict[str, Any], tool: str, data: dict[str, Any], instance: str = "acme:app-dev-g1-0"
) -> dict[str, Any]:
    """The input a runtime gives its sidecar for the call ``decision`` answered: the envelope as
    the bundle's ``data`` carries it (budgets in micro-units), money in micro-units."""
    tenant, _, _ = instance.partition(":")
    return {
        "instance": {"id": instance, "state": "PROVISIONING", "tenant": tenant, "template": "app", "version": "app@1.0.0"},
        "environment": {"name": "dev", "production": False},
        "tool": {
            "name": tool,
            "known": True,
            "risk": decision["risk"]["catalogLevel"],
            "writes": tool == "payments.refund",
            "external": False,
            "productionImpact": False,
        },
        "risk": decision["risk"],
        "args": {},
        "envelope": data["arm"]["fleet"]["envelopes"][tenant]["app@1.0.0"],
        "cost": {"estimate": 0, "run": 0, "day": 0},
        "loop": {"count": 0},
        "approval": {"granted": False},
    }


def ask(served: Served, tool: str) -> dict[str, Any]:
    response = served.client.post(
        "/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": tool}, headers=auth(served.acme)
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_fleet_rule_reading_the_fleet_data_decides_alike_everywhere(served: Served) -> None:
    manifest, modules, data = pulled(served, served.acme)
    require()
    sidecars: list[engines.Engine] = [engines.EmbeddedEngine(), goopa.GoOpaEngine()]  # OPA's own engine: what a sidecar runs
    for sidecar in sidecars:
        sidecar.load(engines.Bundle(modules, data, manifest["revision"]))
    for tool, expected in [
        ("payments.refund", {"decision": "DENY", "reasons": ["payments.refund writes, says the acme catalog"]}),
        ("crm.lookup", {"decision": "ALLOW", "reasons": ["within the envelope"]}),
    ]:
        decided = ask(served, tool)
        assert {k: decided[k] for k in ("decision", "reasons")} == expected, tool
        document = sidecar_input(decided, tool, data)
        answered = served.client.post("/v1/data/arm/decision/result", json={"input": document}, headers=auth(served.acme))
        assert answered.json() == {"result": expected}, tool
        for sidecar in sidecars:
            assert sidecar.evaluate("data.arm.decision.result", document) == expected, tool
    # No input at all is DENY on OPA's engine too (it was ALLOW: a sidecar failed open).
    for sidecar in sidecars:
        assert sidecar.query(["arm", "decision", "result"], None) == {
            "result": {"decision": "DENY", "reasons": ["input is missing or not an object"]}
        }


def test_an_opa_engine_gets_the_same_fleet_data_pushed(git_repo: GitRepo, db: sa.Engine) -> None:
    with OpaDouble() as double:
        decider = deciding.Decider(db, engine=opa.OpaEngine(double.url), group_commit=True)
        try:
            for served in serve(git_repo, db, decider):
                assert ask(served, "payments.refund")["reasons"] == ["payments.refund writes, says the acme catalog"]
                assert set(double.state.data["arm"]["fleet"]["tools"]) == {"acme", "globex"}  # every tenant's
                # The Data API answers from the tenant's bundle whichever engine decides.
                root = served.client.post("/v1/data/arm", json={}, headers=auth(served.acme))
                assert root.status_code == 200 and set(root.json()["result"]["fleet"]["tools"]) == {"acme"}
        finally:
            decider.close()


def test_the_data_api_serves_the_tokens_tenants_data_as_its_bundle_does(served: Served) -> None:
    for token, tenant in [(served.acme, "acme"), (served.globex, "globex")]:
        manifest, _, data = pulled(served, token)
        fleet = served.client.post("/v1/data/arm/fleet", json={}, headers=auth(token)).json()
        assert fleet == {"result": data["arm"]["fleet"]}
        assert set(fleet["result"]["envelopes"]) == {tenant} and set(fleet["result"]["tools"]) == {tenant}
        with served.db.connect() as connection:
            assert manifest == {"revision": fleetstate.read(connection)["applied_sha"], "roots": ["arm"]}  # type: ignore[index]


def test_a_new_commit_reaches_the_data_api_and_the_bundle(served: Served) -> None:
    etag = served.client.get("/v1/bundles/arm.tar.gz", headers=auth(served.acme)).headers["etag"]
    sha = served.apply({"fleet/acme.yaml": tenant_fleet("acme").replace("risk: RED, writes: true", "risk: RED")})
    tool = served.client.get("/v1/data/arm/fleet/tools/acme/payments.refund", headers=auth(served.acme)).json()
    assert tool["result"]["risk"] == "RED" and not tool["result"].get("writes")
    assert ask(served, "payments.refund")["decision"] == "NEEDS_APPROVAL"  # the rule reads the new catalog
    fresh = served.client.get("/v1/bundles/arm.tar.gz", headers={**auth(served.acme), "If-None-Match": etag})
    with served.db.connect() as connection:
        generation = fleetstate.read(connection)["generation"]  # type: ignore[index]
    assert fresh.status_code == 200 and fresh.headers["etag"] == f'"{sha}:{generation}:acme"'
    assert pulled(served, served.acme)[0]["revision"] == sha
    assert (
        served.client.get(
            "/v1/bundles/arm.tar.gz", headers={**auth(served.acme), "If-None-Match": fresh.headers["etag"]}
        ).status_code
        == 304
    )


def test_an_input_missing_what_the_decision_needs_is_denied(served: Served) -> None:
    def decide(body: Any) -> Any:
        return served.client.post("/v1/data/arm/decision/result", json=body, headers=auth(served.acme)).json()["result"]

    empty = decide({"input": {}})
    assert empty["decision"] == "DENY" and "input.instance is missing" in empty["reasons"]
    request_body = decide({"input": {"instance": "acme:support-agent-dev-g1-0", "tool": "shell.exec"}})
    assert request_body["decision"] == "DENY"
    assert 'input.tool must be an object, not "shell.exec"' in request_body["reasons"]
    for no_input in ({}, {"input": None}):
        assert decide(no_input) == {"decision": "DENY", "reasons": ["input is missing or not an object"]}


def test_the_root_document_and_paths_are_read_as_opa_reads_them(served: Served) -> None:
    client, token = served.client, auth(served.acme)
    whole = [
        client.post("/v1/data", json={}, headers=token),
        client.post("/v1/data/", json={}, headers=token),
        client.get("/v1/data", headers=token),
        client.get("/v1/data/", headers=token),
    ]
    assert [r.status_code for r in whole] == [200] * 4
    assert all(r.json() == whole[0].json() for r in whole)
    assert set(whole[0].json()["result"]["arm"]) >= {"decision", "fleet", "gates", "ext"}
    arm = client.post("/v1/data/arm", json={}, headers=token).json()
    assert arm["result"]["fleet"] == whole[0].json()["result"]["arm"]["fleet"]
    assert client.post("/v1/data/arm/no/such/rule", json={"input": {}}, headers=token).json() == {}
    assert client.post("/v1/data//arm///decision/risk_rank/RED", json={}, headers=token).json() == {"result": 2}
    denial = client.get("/v1/data/arm/decision/result", headers=token).json()
    assert denial == {"result": {"decision": "DENY", "reasons": ["input is missing or not an object"]}}
    by_query = client.get("/v1/data/arm/decision/result", params={"input": "{}"}, headers=token).json()
    assert by_query["result"]["decision"] == "DENY" and "input.tool is missing" in by_query["result"]["reasons"]


def test_a_json_body_is_read_whatever_its_content_type(served: Served) -> None:
    client, token = served.client, auth(served.acme)
    body = json.dumps({"input": {}}).encode()
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
        response = client.post("/v1/data/arm/decision/result", content=body, headers={**token, **headers})
        assert response.status_code == 200 and response.json()["result"]["decision"] == "DENY", headers
    assert client.post("/v1/data/arm/decision/result", content=b"", headers=token).json()["result"]["decision"] == "DENY"
    gzipped = gzip.compress(body)
    for bad in (b"{not json", b"[1, 2]", gzipped):
        refused = client.post("/v1/data/arm/decision/result", content=bad, headers=token)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_parameter", bad
    too_large = client.post("/v1/data/arm", content=b" " * (1 << 20) + b"{}", headers=token)
    assert too_large.status_code == 413
    assert client.post("/v1/data/arm", json={}).status_code == 401
    assert client.get("/v1/data").status_code == 401


def test_nothing_writes_policy_or_data_but_git(served: Served) -> None:
    for method in ("PUT", "PATCH", "DELETE"):
        for path in ("/v1/data", "/v1/data/", "/v1/data/arm/fleet", "/v1/policies/evil"):
            refused = served.client.request(method, path, content=b"{}", headers=auth(served.acme))
            assert refused.status_code == 405, (method, path)
            assert refused.json() == {
                "code": "method_not_allowed",
                "message": "policy and data change only through Git: commit to the fleet repository",
            }
    assert served.client.post("/v1/data/arm/fleet", json={}, headers=auth(served.acme)).json()["result"]["tools"]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (b'{"input": {"cost": {"estimate": NaN}}}', "input.cost.estimate is NaN, which is not a JSON number"),
        (b'{"input": {"cost": {"estimate": Infinity}}}', "input.cost.estimate is infinite or past a double's range"),
        (b'{"input": {"args": {"n": -1e400}}}', "input.args.n is infinite or past a double's range"),
        (b'{"input": {"args": {"ids": [1, 9007199254740993]}}}', "input.args.ids[1] is an integer past 2^53"),
        (b'{"input": {"args": {"a.b": 18446744073709551617}}}', 'input.args["a.b"] is an integer past 2^53'),
    ],
)
def test_numbers_no_engine_reads_alike_are_refused_naming_the_field(served: Served, given: bytes, says: str) -> None:
    refused = served.client.post("/v1/data/arm/decision/result", content=given, headers=auth(served.acme))
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "invalid_parameter" and says in refused.json()["message"]
    inner = json.dumps(json.loads(given)["input"])  # the same input as GET's ?input=
    by_query = served.client.get("/v1/data/arm/decision/result", params={"input": inner}, headers=auth(served.acme))
    assert by_query.status_code == 400 and says in by_query.json()["message"]


def test_every_way_of_giving_no_input_is_denied(served: Served) -> None:
    client, token = served.client, auth(served.acme)
    denied = {"result": {"decision": "DENY", "reasons": ["input is missing or not an object"]}}
    answers = [
        client.post("/v1/data/arm/decision/result", content=b"", headers=token),
        client.post("/v1/data/arm/decision/result", content=b"  \n", headers=token),
        client.post("/v1/data/arm/decision/result", json={}, headers=token),
        client.post("/v1/data/arm/decision/result", json={"input": None}, headers=token),
        client.get("/v1/data/arm/decision/result", headers=token),
        client.get("/v1/data/arm/decision/result", params={"input": "null"}, headers=token),
        client.post("/v1/data/arm/decision/result", json={"input": "crm.lookup"}, headers=token),
    ]
    assert [(r.status_code, r.json()) for r in answers] == [(200, denied)] * len(answers)
