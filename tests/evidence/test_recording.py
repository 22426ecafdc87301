"""Recording runs on SQLite and PostgreSQL: bound to the version's genome hash, checked against
the suite, append-only, chained with the submitter, secrets kept out; and continuous evaluation,
which restricts a deployed version that fails and records why."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.evidence import recording
from reconciler.oversight import holds
from reconciler.state import tables
from tests.evidence import fleetdata
from tests.evidence.conftest import Fleet
from tests.reconcile import scenario

ALICE = recording.Submitter("operator", "alice")
PIPELINE = recording.Submitter("ci", "pipeline")


def submit(fleet: Fleet, submitter: recording.Submitter = PIPELINE, **given: Any) -> recording.Recorded:
    args: dict[str, Any] = {"version": "app@1.0.0", "suite": "jailbreak", "metrics": {"refusal_rate": 1.0}, "samples": 200}
    args |= given
    with fleet.engine.begin() as connection:
        return recording.submit(connection, "acme", submitter, now=fleetdata.NOW, **args)


def genome_of(fleet: Fleet, name: str) -> str:
    ((genome,),) = scenario.rows(fleet.engine, tables.agent_versions, "genome_hash", name=name)
    return str(genome)


def counts(fleet: Fleet) -> tuple[int, int, int]:
    with fleet.engine.connect() as connection:
        return (
            connection.execute(sa.select(sa.func.count()).select_from(tables.evaluation_runs)).scalar_one(),
            connection.execute(chain.count_query()).scalar_one(),
            connection.execute(sa.select(tables.fleet_state.c.generation)).scalar_one(),
        )


def test_a_run_is_bound_to_the_genome_hash_and_chained_with_its_submitter(fleet: Fleet) -> None:
    genome = genome_of(fleet, "app@1.0.0")
    mark = scenario.last_record_id(fleet.engine)
    recorded = submit(fleet, genome_hash=genome, run_url="https://ci.example/runs/7", details={"harness": "v3"})
    run = recorded.run
    assert (run["version"], run["genomeHash"], run["suite"], run["category"]) == ("app@1.0.0", genome, "jailbreak", "safety")
    assert (run["submitter"], run["verdict"], run["samples"], run["metrics"]) == (
        "ci token pipeline",
        "passing",
        200,
        {"refusal_rate": 1.0},
    )
    assert recorded.verdict.status == "passing" and recorded.deployed is True  # it runs in dev
    with fleet.engine.connect() as connection:
        (record,) = connection.execute(sa.select(tables.change_records).where(tables.change_records.c.id > mark)).mappings()
        assert list(chain.verify(connection)) == []
    assert (record["type"], record["object_kind"], record["object_name"]) == ("EVALUATION_RECORDED", "AgentVersion", "app@1.0.0")
    assert (record["author"], record["operator"]) == ("ci token pipeline", None)
    assert record["after"] | {"summary": ""} == {
        "run": run["id"], "suite": "jailbreak", "category": "safety", "genomeHash": genome, "metrics": {"refusal_rate": 1.0},
        "samples": 200, "runUrl": "https://ci.example/runs/7", "submitter": "ci token pipeline", "status": "passing", "summary": "",
    }  # fmt: skip

    by_operator = submit(fleet, ALICE)
    assert by_operator.run["submitter"] == "operator alice"
    (last,) = scenario.records(fleet.engine, scenario.last_record_id(fleet.engine) - 1)
    assert last == ("EVALUATION_RECORDED", "AgentVersion", "app@1.0.0")


def test_a_run_naming_another_genome_hash_is_refused_and_writes_nothing(fleet: Fleet) -> None:
    before = counts(fleet)
    other = genome_of(fleet, "app@2.0.0")
    with pytest.raises(errors.Conflict) as refused:
        submit(fleet, genome_hash=other)
    assert str(refused.value) == (
        f"the run names genome {other}, but app@1.0.0 is {genome_of(fleet, 'app@1.0.0')}: a run is evidence only for the "
        "genome it measured"
    )
    assert counts(fleet) == before


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"version": "app@9.9.9"}, errors.NotFound, "version 'app@9.9.9' is not declared in the applied fleet of tenant 'acme'"),
        ({"suite": "nope"}, errors.NotFound, "EvaluationSuite 'nope' is not declared in the applied fleet of tenant 'acme'"),
        ({"version": "other@1.0.0", "suite": "drift", "metrics": {"resolution": 0.9}}, errors.ConfigError,
         "EvaluationSuite 'drift' does not apply to template 'other'"),
        ({"metrics": {"refusal_rate": 1.0, "typo": 1}}, errors.ConfigError, "suite 'jailbreak' declares no metric 'typo'"),
        ({"metrics": {}}, errors.ConfigError, "metrics: report every metric of suite 'jailbreak'"),
        ({"suite": "qa", "metrics": {"other": 1}}, errors.ConfigError, "declares no metric 'other'"),
        ({"metrics": {"refusal_rate": 97}}, errors.ConfigError, "metrics.refusal_rate: a rate lies between 0 and 1 (97% is 0.97), not 97"),
        ({"metrics": {"refusal_rate": float("nan")}}, errors.ConfigError, "metrics.refusal_rate: a finite number is needed"),
        ({"metrics": {"refusal_rate": True}}, errors.ConfigError, "metrics.refusal_rate: a finite number is needed"),
        ({"samples": -1}, errors.ConfigError, "samples: a whole number between 0 and 1000000000 is needed"),
        ({"samples": 2.5}, errors.ConfigError, "samples: a whole number"),
        ({"genome_hash": "sha256:xyz"}, errors.ConfigError, "genomeHash: 'sha256:' and 64 lowercase hex digits are needed"),
        ({"run_url": "javascript:alert(1)"}, errors.ConfigError, "runUrl: an http(s) URL"),
        ({"details": ["not", "an", "object"]}, errors.ConfigError, "details: a JSON object is needed"),
        ({"details": {"blob": "x" * 70_000}}, errors.ConfigError, "above the limit of 65536"),
    ],
)  # fmt: skip
def test_a_bad_run_is_refused_with_a_clear_error_and_writes_nothing(
    fleet: Fleet, given: dict[str, Any], error: type[errors.ArmError], message: str
) -> None:
    before = counts(fleet)
    with pytest.raises(error) as refused:
        submit(fleet, **given)
    assert message in str(refused.value)
    assert counts(fleet) == before


def test_who_may_submit(fleet: Fleet) -> None:
    with pytest.raises(errors.Forbidden, match="operator 'victor' lacks permission evaluations:submit in tenant 'acme'"):
        submit(fleet, recording.Submitter("operator", "victor"))
    with pytest.raises(errors.Forbidden, match="token 'limited' submits runs for template other only, not 'app'"):
        submit(fleet, recording.Submitter("ci", "limited", frozenset({"other"})))
    assert (
        submit(fleet, recording.Submitter("ci", "limited", frozenset({"other"})), version="other@1.0.0").run["template"]
        == "other"
    )
    with pytest.raises(errors.Forbidden, match="operator 'mallory' is not declared in tenant 'acme'"):
        submit(fleet, recording.Submitter("operator", "mallory"))


def test_runs_are_append_only_in_the_store_itself(fleet: Fleet) -> None:
    submit(fleet)
    runs = tables.evaluation_runs
    for statement in (runs.update().values(metrics={"refusal_rate": 1.0}, samples=10_000), runs.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="evaluation runs are append-only"), fleet.engine.begin() as connection:
            connection.execute(statement)
    assert scenario.rows(fleet.engine, runs, "samples") == [(200,)]


def test_secrets_in_a_run_never_reach_a_stored_byte(fleet: Fleet) -> None:
    secret = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    submit(fleet, run_url=f"https://ci:{secret}@ci.example/runs/8?token={secret}", details={"api_key": secret, "note": "ok"})
    with fleet.engine.connect() as connection:
        stored = [str(tuple(r)) for r in connection.execute(sa.select(tables.evaluation_runs))]
        stored += [str(tuple(r)) for r in connection.execute(sa.select(tables.change_records))]
    assert not any(secret in row for row in stored)
    ((url, details),) = scenario.rows(fleet.engine, tables.evaluation_runs, "run_url", "details")
    assert url.startswith("https://ci:") and url.endswith("@ci.example/runs/8?token=[REDACTED]")
    assert details == {"api_key": "[REDACTED]", "note": "ok"}


def test_a_failing_safety_run_restricts_the_deployed_version_and_records_why(fleet: Fleet) -> None:
    mark = scenario.last_record_id(fleet.engine)
    failed = submit(fleet, metrics={"refusal_rate": 0.97})
    run = failed.run["id"]
    genome = genome_of(fleet, "app@1.0.0")
    summary = f"safety suite jailbreak scored 97.0% (needs 100%) on {genome}"
    assert (failed.verdict.status, failed.verdict.summary, failed.deployed) == ("failing", summary, True)
    assert [(c.instance, c.before, c.after) for c in failed.restricted] == [
        ("acme:app-dev-g1-0", "ACTIVE", "READONLY"),
        ("acme:app-dev-g1-1", "ACTIVE", "READONLY"),
    ]
    assert scenario.records(fleet.engine, mark) == [
        ("EVALUATION_RECORDED", "AgentVersion", "app@1.0.0"),
        ("EVALUATION_FAILED", "AgentVersion", "app@1.0.0"),
        ("EMERGENCY_READONLY", "Instance", "acme:app-dev-g1-0"),
        ("EMERGENCY_READONLY", "Instance", "acme:app-dev-g1-1"),
    ]
    c = tables.change_records.c
    with fleet.engine.connect() as connection:
        afters = [r.after for r in connection.execute(sa.select(c.after).where(c.id > mark).order_by(c.id))]
    assert afters[1] == {"run": run, "suite": "jailbreak", "category": "safety", "summary": summary, "onFailure": "readonly"}
    assert afters[2] == {
        "state": "READONLY",
        "control": f"evaluation-run-{run}",
        "reason": f"evaluation run {run}: {summary}",
        "run": run,
    }
    assert scenario.rows(fleet.engine, tables.instances, "id", "state", "held_by") == [
        ("acme:app-dev-g1-0", "READONLY", f"evaluation-run-{run}"),
        ("acme:app-dev-g1-1", "READONLY", f"evaluation-run-{run}"),
    ]

    # Held drift: Git wants them ACTIVE; the reconcile leaves them and says so.
    outcome = fleet.apply()
    assert outcome.plan is not None
    held = sorted(cond.message for cond in outcome.plan.conditions if cond.type == "Held")
    assert (
        held[0] == f"instance acme:app-dev-g1-0 is READONLY by an emergency control (evaluation-run-{run}); Git wants it ACTIVE"
    )

    # New deployments of the version wait for a passing run (and the version stays at TESTING).
    fleet.repo.commit(fleetdata.prod_files(), "app to prod", author=scenario.AUTHOR)
    waiting = fleet.apply()
    assert waiting.plan is not None
    (prod,) = [cond for cond in waiting.plan.conditions if cond.name == "app-prod"]
    assert f"waiting for evaluation: {summary}" in prod.message
    assert scenario.rows(fleet.engine, tables.deployments, "name") == [("app-dev",)]

    # A passing run clears the evidence but not the hold: an operator resumes, as with every control.
    submit(fleet)
    assert scenario.rows(fleet.engine, tables.instances, "state") == [("READONLY",), ("READONLY",)]
    with fleet.engine.begin() as connection:
        holds.control_instance(connection, "acme:app-dev-g1-0", "resume", "alice", "re-evaluated: 100%", fleetdata.NOW)
    assert scenario.rows(fleet.engine, tables.instances, "id", "state", "held_by")[0] == ("acme:app-dev-g1-0", "ACTIVE", None)


def test_a_failing_run_of_a_version_that_runs_nowhere_restricts_nothing(fleet: Fleet) -> None:
    scenario.evaluate(fleet.engine, "app@1.0.0")
    fleet.apply()  # app@1.0.0 is CANDIDATE now; app@2.0.0 (DRAFT) runs nowhere
    mark = scenario.last_record_id(fleet.engine)
    failed = submit(fleet, version="app@2.0.0", metrics={"refusal_rate": 0.5})
    assert (failed.verdict.status, failed.deployed, failed.restricted) == ("failing", False, [])
    assert scenario.records(fleet.engine, mark) == [("EVALUATION_RECORDED", "AgentVersion", "app@2.0.0")]


def test_a_regression_run_is_judged_against_the_parents_passing_run(fleet: Fleet) -> None:
    submit(fleet, suite="drift", metrics={"resolution": 0.9})
    worse = submit(fleet, version="app@2.0.0", suite="drift", metrics={"resolution": 0.85})
    assert worse.verdict.status == "failing"
    assert (
        "scored 85.0% against 90.0% for app@1.0.0 (run 1), a drop of 5.0 points (at most 2.0 points allowed)"
        in worse.verdict.summary
    )
    assert worse.verdict.baseline == {"version": "app@1.0.0", "run": 1, "metrics": {"resolution": 0.9}}
    assert worse.deployed is False
    same = submit(fleet, version="app@2.0.0", suite="drift", metrics={"resolution": 0.89})
    assert same.verdict.status == "passing"


def test_audit_verify_finds_a_run_altered_behind_the_stores_back(fleet: Fleet) -> None:
    from reconciler.audit import integrity

    submit(fleet)
    submit(fleet, suite="drift", metrics={"resolution": 0.9})
    with fleet.engine.connect() as connection:
        assert integrity.verify_runs(connection) == []
    # Someone with the database's owner rights drops the guard and rewrites the evidence.
    with fleet.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("DROP TRIGGER evaluation_runs_append_only ON evaluation_runs")
        else:
            connection.exec_driver_sql("DROP TRIGGER evaluation_runs_no_update")
        connection.execute(
            tables.evaluation_runs.update().where(tables.evaluation_runs.c.id == 2).values(metrics={"resolution": 0.99})
        )
    with fleet.engine.connect() as connection:
        assert integrity.verify_runs(connection) == [
            integrity.AlteredRun("acme", 2, "differs from its EVALUATION_RECORDED record in metrics")
        ]
