"""Commits the reconciler refuses apply nothing, keep the last good commit, and say why."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.policy import engines
from reconciler.reconcile import reporting, running
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR, deployment, version

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            t.name: connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables.metadata.sorted_tables
            if t.name != "reconcile_runs"
        }


def _runs(engine: sa.Engine) -> list[tuple[str, str]]:
    return [(sha[:7], outcome) for _, sha, outcome in scenario.rows(engine, tables.reconcile_runs, "id", "sha", "outcome")]


def test_an_invalid_commit_between_two_valid_ones_applies_nothing(git_repo: GitRepo, db_url: str) -> None:
    good = git_repo.commit(scenario.first_commit_files(), author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    before = _counts(rec.db)

    bad = git_repo.commit(
        {
            "fleet/deploy-dev.yaml": deployment("app-dev", "qa", "1.0.0", 3),
            "fleet/app/v1.yaml": version("1.0.0", "CANDIDATE").replace("replicas", "x") + "  extra: 1\n",
        },
        "broken",
        author=AUTHOR,
    )
    with pytest.raises(errors.ValidationFailed) as caught:
        rec.apply("main")
    found = {(p.file, p.field, p.message) for p in caught.value.problems}
    assert found == {
        ("fleet/deploy-dev.yaml", "spec.environment", "Environment 'qa' does not exist in tenant 'acme'"),
        ("fleet/app/v1.yaml", "spec.extra", "unknown field 'extra'"),
    }
    assert _counts(rec.db) == before
    with rec.db.connect() as connection:
        state = connection.execute(sa.select(tables.fleet_state)).mappings().one()
        failed = connection.execute(sa.select(tables.reconcile_runs).where(tables.reconcile_runs.c.sha == bad)).mappings().one()
    assert state["applied_sha"] == good
    assert failed["outcome"] == "FAILED"
    assert {e["field"] for e in failed["errors"]} == {"spec.environment", "spec.extra"}

    fixed = git_repo.commit(
        {"fleet/deploy-dev.yaml": deployment("app-dev", "dev", "1.0.0", 3), "fleet/app/v1.yaml": version("1.0.0", "CANDIDATE")},
        author=AUTHOR,
    )
    outcome = rec.apply("main")
    assert outcome.outcome == "APPLIED"
    assert ("INSTANCE_CREATED", "Instance", "acme:app-dev-g1-2") in scenario.records(rec.db)
    assert _runs(rec.db) == [(good[:7], "APPLIED"), (bad[:7], "FAILED"), (fixed[:7], "APPLIED")]


def test_a_changed_genome_is_refused_naming_file_and_version(git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(scenario.first_commit_files(), author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    before = _counts(rec.db)
    git_repo.commit({"fleet/app/prompts/v1.md": "You help, and you are now very different.\n"}, author=AUTHOR)
    with pytest.raises(errors.PlanError) as caught:
        rec.apply("main")
    (problem,) = caught.value.problems
    assert (problem.file, problem.document, problem.field) == ("fleet/app/v1.yaml", 0, "spec.genome")
    assert "the genome of app@1.0.0 is write-once" in problem.message
    assert "declare a new version with 'parent: app@1.0.0'" in problem.message
    assert _counts(rec.db) == before


def test_a_lifecycle_that_cannot_be_reached_is_refused(git_repo: GitRepo, db_url: str) -> None:
    files = scenario.first_commit_files() | {"fleet/app/v1.yaml": version("1.0.0", "CANDIDATE")}
    git_repo.commit(files, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    scenario.evaluate(rec.db, "app@1.0.0")
    rec.apply("main")
    git_repo.commit({"fleet/app/v1.yaml": version("1.0.0", "DRAFT")}, author=AUTHOR)
    with pytest.raises(errors.PlanError) as caught:
        rec.apply("main")
    (problem,) = caught.value.problems
    assert problem.field == "spec.lifecycle"
    assert problem.message == "app@1.0.0: AgentVersion cannot go from CANDIDATE to DRAFT; allowed next states: APPROVED"
    assert scenario.rows(rec.db, tables.agent_versions, "lifecycle") == [("CANDIDATE",)]


def test_a_version_claiming_evidence_in_its_manifest_waits_until_a_run_is_recorded(git_repo: GitRepo, db_url: str) -> None:
    claimed = version("1.0.0", "CANDIDATE") + "  evaluations:\n    - {suite: qa, score: 0.99, threshold: 0.9, passed: true}\n"
    git_repo.commit(scenario.first_commit_files() | {"fleet/app/v1.yaml": claimed}, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    outcome = rec.apply("main")
    assert outcome.plan is not None
    (warning,) = outcome.plan.warnings
    assert (warning.file, warning.document, warning.field) == ("fleet/app/v1.yaml", 0, "spec.evaluations")
    assert warning.message.startswith("ignored: a manifest's evaluation results are not evidence")
    (waiting,) = [c for c in outcome.plan.conditions if c.kind == "AgentVersion"]
    genome = scenario.rows(rec.db, tables.agent_versions, "genome_hash")[0][0]
    assert waiting.message == f"TESTING -> CANDIDATE: waiting for evaluation: capability suite qa has no run on {genome}"
    assert scenario.rows(rec.db, tables.agent_versions, "lifecycle") == [("TESTING",)]
    assert scenario.rows(rec.db, tables.approvals, "id") == []  # evidence is not something to approve

    mark = scenario.last_record_id(rec.db)
    (run,) = scenario.evaluate(rec.db, "app@1.0.0")
    assert rec.apply("main").outcome == "APPLIED"
    assert scenario.records(rec.db, mark) == [
        ("EVALUATION_RECORDED", "AgentVersion", "app@1.0.0"),
        ("VERSION_TRANSITIONED", "AgentVersion", "app@1.0.0"),
    ]
    assert scenario.rows(rec.db, tables.agent_versions, "lifecycle", "conditions") == [("CANDIDATE", [])]
    assert scenario.rows(rec.db, tables.evaluation_runs, "id", "genome_hash", "verdict") == [(run, genome, "passing")]


def test_a_schema_behind_is_refused_and_init_upgrades_it_keeping_the_data(git_repo: GitRepo, db_url: str) -> None:
    from reconciler.reconcile import running
    from reconciler.state import database

    with pytest.raises(errors.StoreError, match="has no schema yet: run 'armctl init'"):
        running.open_database(db_url)
    engine = database.connect(db_url)
    assert database.migrate(engine, "0001") == (None, "0001")
    with engine.begin() as connection:
        connection.execute(tables.op_events.insert(), {"tenant": "acme", "at": NOW, "type": "KEPT", "payload": {"a": 1}})
    with pytest.raises(
        errors.StoreError,
        match=f"is at schema revision 0001, this armctl needs {database.SCHEMA_HEAD}: run 'armctl init' to upgrade",
    ):
        running.open_database(db_url)
    assert database.migrate(engine) == ("0001", database.SCHEMA_HEAD)
    running.open_database(db_url)
    assert scenario.rows(engine, tables.op_events, "type") == [("KEPT",)]
    git_repo.commit(scenario.first_commit_files(), author=AUTHOR)
    assert scenario.make_reconciler(db_url, git_repo).apply("main").outcome == "APPLIED"


class _BuggyEngine(engines.EmbeddedEngine):
    """The embedded engine with a bug in it: loads fine, then fails on its first evaluation with
    an error the reconciler does not expect (a test double behind the engine interface: no real
    component can be made to have a bug on demand)."""

    def evaluate(self, rule: str, input: Any) -> Any:
        raise KeyError("gate")


def test_a_bug_in_the_middle_of_a_reconcile_is_recorded_as_a_failed_run_and_reported(git_repo: GitRepo, db_url: str) -> None:
    good = git_repo.commit(scenario.first_commit_files(), author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    before = _counts(rec.db)
    git_repo.commit({"fleet/app/v1.yaml": version("1.0.0", "CANDIDATE")}, "promote", author=AUTHOR)
    buggy = running.Reconciler(rec.db, rec.repo, "fleet", engine=_BuggyEngine())

    with pytest.raises(errors.InternalError) as failure:
        buggy.apply("main")

    assert "failed unexpectedly (KeyError: 'gate'); nothing was applied" in str(failure.value)
    assert _counts(rec.db) == before  # nothing of the commit was applied
    runs = scenario.rows(rec.db, tables.reconcile_runs, "id", "outcome", "errors")
    assert runs[-1][1] == "FAILED"
    assert "KeyError: 'gate'" in runs[-1][2][0]["message"]
    with rec.db.connect() as connection:
        status = reporting.status(connection)
    assert status["appliedSha"] == good  # the last good commit stays in force
    assert status["lastRuns"][0]["outcome"] == "FAILED"
