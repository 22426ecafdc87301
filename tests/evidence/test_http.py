"""Evidence over HTTP on a real server: who may submit a run (a forged one is 403), bodies
bounded and authenticated before they are parsed, a ci token confined to evidence, and the
scorecard JSON of a fixed scenario."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests.evidence import fleetdata
from tests.evidence.conftest import Api
from tests.reconcile import scenario

RUN = {"version": "app@1.0.0", "suite": "jailbreak", "metrics": {"refusal_rate": 1.0}, "samples": 200}


def post(api: Api, who: str, body: Any = None, **more: Any) -> Any:
    return api.client.post("/v1/evaluations", json=RUN | (body or {}), headers=api.headers(who), **more)


def runs(api: Api) -> int:
    with api.fleet.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(tables.evaluation_runs)).scalar_one())


def test_a_ci_token_records_a_run_bound_to_the_genome_hash(api: Api) -> None:
    answer = post(api, "ci", {"runUrl": "https://ci.example/runs/1"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    ((genome,),) = scenario.rows(api.fleet.engine, tables.agent_versions, "genome_hash", name="app@1.0.0")
    assert body["run"] | {"at": None} == {
        "id": 1, "tenant": "acme", "version": "app@1.0.0", "template": "app", "genomeHash": genome, "suite": "jailbreak",
        "category": "safety", "metrics": {"refusal_rate": 1.0}, "samples": 200, "runUrl": "https://ci.example/runs/1",
        "details": None, "submitter": "ci token pipeline", "verdict": "passing", "at": None,
    }  # fmt: skip
    assert body["evidence"]["status"] == "passing" and body["restricted"] == []
    listed = api.client.get("/v1/evaluations?version=app@1.0.0", headers=api.headers("runtime")).json()
    assert [r["id"] for r in listed] == [1]


@pytest.mark.parametrize(
    ("who", "body", "message"),
    [
        (
            "runtime",
            {},
            "token 'rt' is a runtime token; submitting evaluation runs needs a ci token or the token of an operator holding evaluations:submit",
        ),
        ("victor", {}, "operator 'victor' lacks permission evaluations:submit in tenant 'acme'"),
        ("ci-other", {}, "token 'other-pipeline' submits runs for template other only, not 'app'"),
    ],
)
def test_a_forged_run_through_a_token_without_the_right_is_403_and_writes_nothing(
    api: Api, who: str, body: dict[str, Any], message: str
) -> None:
    answer = post(api, who, body)
    assert answer.status_code == 403
    assert answer.json() == {"error": "Forbidden", "message": message}
    assert runs(api) == 0


def test_an_operator_holding_evaluations_submit_may_submit(api: Api) -> None:
    answer = post(api, "alice")
    assert answer.status_code == 201 and answer.json()["run"]["submitter"] == "operator alice"


def test_a_run_naming_another_genome_hash_is_409(api: Api) -> None:
    ((other,),) = scenario.rows(api.fleet.engine, tables.agent_versions, "genome_hash", name="app@2.0.0")
    answer = post(api, "ci", {"genomeHash": other})
    assert answer.status_code == 409 and "a run is evidence only for the genome it measured" in answer.json()["message"]
    assert runs(api) == 0


def test_bodies_are_authenticated_then_bounded_then_parsed(api: Api) -> None:
    anonymous = api.client.post("/v1/evaluations", content=b"{not json")
    assert anonymous.status_code == 401  # before the body is looked at
    huge = api.client.post(
        "/v1/evaluations",
        content=b"{" + b" " * (1 << 20) + b"}",
        headers=api.headers("ci") | {"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    broken = api.client.post("/v1/evaluations", content=b"{not json", headers=api.headers("ci"))
    assert broken.status_code == 422 and broken.json()["problems"][0]["type"] == "json_invalid"
    extra = post(api, "ci", {"passed": True})
    assert extra.status_code == 422 and extra.json()["problems"][0]["loc"] == ["body", "passed"]
    rate = post(api, "ci", {"metrics": {"refusal_rate": 100}})
    assert rate.status_code == 422 and "a rate lies between 0 and 1" in rate.json()["message"]
    unknown = post(api, "ci", {"version": "app@7.0.0"})
    assert unknown.status_code == 404
    assert runs(api) == 0


def test_a_ci_token_reaches_evidence_and_nothing_else(api: Api) -> None:
    headers = api.headers("ci")
    for method, path in [
        ("GET", "/v1/approvals"),
        ("GET", "/v1/instances"),
        ("GET", "/v1/status"),
        ("GET", "/v1/bundles/arm.tar.gz"),
        ("POST", "/v1/instances/acme:app-dev-g1-0/controls"),
        ("POST", "/v1/events"),
    ]:
        answer = api.client.request(method, path, headers=headers, json={})
        assert answer.status_code == 403, (path, answer.text)
        assert "is a ci token: it may submit evaluation runs and read runs and versions only" in answer.json()["message"]
    decision = api.client.post("/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=headers)
    assert decision.status_code == 403 and "is a ci token; asking decisions needs a runtime token" in decision.json()["message"]
    assert api.client.get("/v1/versions", headers=headers).status_code == 200
    limited = api.client.get("/v1/versions", headers=api.headers("ci-other")).json()
    assert [v["name"] for v in limited] == ["other@1.0.0"]
    hidden = api.client.get("/v1/versions/app@1.0.0", headers=api.headers("ci-other"))
    assert hidden.status_code == 404


def test_continuous_evaluation_over_http_restricts_and_the_next_decision_sees_it(api: Api) -> None:
    ask = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}
    assert api.client.post("/v1/decisions", json=ask, headers=api.headers("runtime")).json()["decision"] == "ALLOW"
    failed = post(api, "ci", {"metrics": {"refusal_rate": 0.9}})
    assert failed.status_code == 201
    body = failed.json()
    assert body["deployed"] is True and body["evidence"]["status"] == "failing"
    assert body["restricted"] == [
        {"instance": "acme:app-dev-g1-0", "before": "ACTIVE", "after": "READONLY"},
        {"instance": "acme:app-dev-g1-1", "before": "ACTIVE", "after": "READONLY"},
    ]
    listed = {i["id"]: i for i in api.client.get("/v1/instances", headers=api.headers("runtime")).json()}
    assert (listed["acme:app-dev-g1-0"]["state"], listed["acme:app-dev-g1-0"]["held_by"]) == ("READONLY", "evaluation-run-1")


def test_the_scorecard_of_a_fixed_scenario(api: Api) -> None:
    engine = api.fleet.engine
    for body in (
        {},  # jailbreak passes
        {"suite": "qa", "metrics": {"pass_rate": 0.95}, "samples": 50},
        {"suite": "drift", "metrics": {"resolution": 0.9}},
        {"version": "app@2.0.0", "suite": "drift", "metrics": {"resolution": 0.87}},
        {"version": "app@2.0.0", "suite": "qa", "metrics": {"pass_rate": 0.95}, "samples": 5},
    ):
        assert post(api, "ci", body).status_code == 201
    api.fleet.apply()  # app@1.0.0: TESTING -> CANDIDATE
    ((v1,),) = scenario.rows(engine, tables.agent_versions, "genome_hash", name="app@1.0.0")
    ((v2,),) = scenario.rows(engine, tables.agent_versions, "genome_hash", name="app@2.0.0")

    listed = api.client.get("/v1/versions", headers=api.headers("alice")).json()
    assert [(v["name"], v["lifecycle"], v["genomeHash"], [d["environment"] for d in v["deployedTo"]]) for v in listed] == [
        ("app@1.0.0", "CANDIDATE", v1, ["dev"]),
        ("app@2.0.0", "DRAFT", v2, []),
        ("other@1.0.0", "TESTING", listed[2]["genomeHash"], []),
    ]
    assert [v["waiting"] for v in listed] == [[], [], []]  # each is where Git wants it

    card = api.client.get("/v1/versions/app@2.0.0", headers=api.headers("alice")).json()
    assert card["lifecycle"] == "DRAFT" and card["genomeHash"] == v2
    assert card["integrity"] == {"status": "OK", "checkedAt": fleetdata.NOW.isoformat(), "computedHash": v2}
    assert card["lineage"] == {
        "parent": "app@1.0.0", "ancestors": [{"name": "app@1.0.0", "lifecycle": "CANDIDATE", "genomeHash": v1}], "children": [],
    }  # fmt: skip
    evidence = {e["suite"]: e for e in card["evidence"]}
    assert list(evidence) == ["drift", "jailbreak", "qa"]
    assert {k: evidence["drift"][k] for k in ("category", "status", "run", "samples", "baseline", "submitter", "runs")} == {
        "category": "regression", "status": "failing", "run": 4, "samples": 200,
        "baseline": {"version": "app@1.0.0", "run": 3, "metrics": {"resolution": 0.9}}, "submitter": "ci token pipeline", "runs": 1,
    }  # fmt: skip
    (value,) = evidence["drift"]["values"]
    assert value | {"regression": round(value["regression"], 6)} == {
        "metric": "resolution", "unit": "rate", "direction": "higher", "threshold": 0.8, "value": 0.87, "effective": 0.87,
        "passes": False, "baseline": 0.9, "regression": 0.03,
    }  # fmt: skip
    assert evidence["drift"]["summary"] == (
        f"regression suite drift scored 87.0% against 90.0% for app@1.0.0 (run 3), a drop of 3.0 points "
        f"(at most 2.0 points allowed) on {v2}"
    )
    assert evidence["drift"]["requiredFor"] == {"steps": [], "environments": ["prod"]}
    assert (evidence["jailbreak"]["status"], evidence["jailbreak"]["summary"]) == (
        "missing",
        f"safety suite jailbreak has no run on {v2}",
    )
    assert evidence["qa"]["status"] == "missing"
    assert evidence["qa"]["summary"] == f"capability suite qa has no run with at least 10 samples on {v2} (run 5 had 5)"
    assert card["approvals"] == [] and card["deployments"] == [] and card["waiting"] == []

    first = api.client.get("/v1/versions/app@1.0.0", headers=api.headers("ci")).json()
    assert [(e["suite"], e["status"]) for e in first["evidence"]] == [
        ("drift", "passing"),
        ("jailbreak", "passing"),
        ("qa", "passing"),
    ]
    assert [(a["transition"], a["status"], a["roles"]) for a in first["approvals"]] == []
    (dev,) = first["deployments"]
    assert (dev["name"], dev["environment"], dev["state"], [i["id"] for i in dev["instances"]]) == (
        "app-dev", "dev", "ACTIVE", ["acme:app-dev-g1-0", "acme:app-dev-g1-1"],
    )  # fmt: skip
    assert api.client.get("/v1/versions/nope@1.0.0", headers=api.headers("alice")).status_code == 404


def test_the_scorecard_rehashes_the_genome_and_records_a_tampered_one_once(api: Api) -> None:
    engine = api.fleet.engine
    versions = tables.agent_versions
    with engine.begin() as connection:
        genome = connection.execute(sa.select(versions.c.genome).where(versions.c.name == "app@2.0.0")).scalar_one()
        genome["model"]["name"] = "a-cheaper-model"
        connection.execute(versions.update().where(versions.c.name == "app@2.0.0").values(genome=genome))
    for _ in range(2):
        card = api.client.get("/v1/versions/app@2.0.0", headers=api.headers("alice")).json()
        assert card["integrity"]["status"] == "FAILED" and card["integrity"]["computedHash"] != card["genomeHash"]
    recorded = scenario.records(engine)
    assert recorded.count(("VERSION_INTEGRITY_FAILED", "AgentVersion", "app@2.0.0")) == 1
    assert scenario.rows(engine, versions, "integrity", name="app@2.0.0") == [("FAILED",)]
    assert post(api, "ci", {"version": "app@2.0.0"}).json()["message"] == (
        "version app@2.0.0 failed its integrity check; no evidence can be recorded for it"
    )
