"""A fleet's life over several commits, on SQLite and PostgreSQL, record by record.

Add a version and deploy it; promote it through its gates with an approval; move a deployment to
a new version; roll back with ``git revert``; remove a manifest. Each step asserts the exact
change records the commit wrote, and that applying it again writes nothing.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.oversight import approving, holds
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR, deployment, version

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def test_a_fleet_lives_through_promotion_rollout_rollback_and_prune(git_repo: GitRepo, db_url: str) -> None:
    # Commit 1: the fleet, a version in TESTING, a dev deployment of two replicas.
    sha1 = git_repo.commit(scenario.first_commit_files(), "add app", author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    db = rec.db
    outcome = rec.apply("main")
    assert outcome.outcome == "APPLIED"
    scenario.assert_cached_state_is_true(rec)
    assert scenario.records(db) == [
        ("TENANT_BOOTSTRAPPED", "Tenant", "acme"),
        ("PROJECT_CREATED", "Project", "apps"),
        ("ENVIRONMENT_CREATED", "Environment", "dev"),
        ("ENVIRONMENT_CREATED", "Environment", "prod"),
        ("ROLE_CREATED", "Role", "release-manager"),
        ("ROLE_CREATED", "Role", "viewer"),
        ("OPERATOR_CREATED", "Operator", "alice"),
        ("OPERATOR_CREATED", "Operator", "victor"),
        ("TOOL_CATALOG_CREATED", "ToolCatalog", "tools"),
        ("TEMPLATE_CREATED", "AgentTemplate", "app"),
        ("EVALUATION_SUITE_CREATED", "EvaluationSuite", "qa"),
        ("VERSION_CREATED", "AgentVersion", "app@1.0.0"),
        ("VERSION_TRANSITIONED", "AgentVersion", "app@1.0.0"),
        ("DEPLOYMENT_DECLARED", "Deployment", "app-dev"),
        ("DEPLOYMENT_CREATED", "Deployment", "app-dev"),
        ("DEPLOYMENT_ACTIVATED", "Deployment", "app-dev"),
        ("INSTANCE_CREATED", "Instance", "acme:app-dev-g1-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-0"),
        ("INSTANCE_CREATED", "Instance", "acme:app-dev-g1-1"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-1"),
    ]
    with db.connect() as connection:
        first = connection.execute(sa.select(tables.change_records).order_by(tables.change_records.c.id)).mappings().first()
    assert first is not None
    assert (first["sha"], first["author"], first["operator"]) == (sha1, AUTHOR, "alice")
    assert scenario.rows(db, tables.instances, "id", "state", "version") == [
        ("acme:app-dev-g1-0", "ACTIVE", "app@1.0.0"),
        ("acme:app-dev-g1-1", "ACTIVE", "app@1.0.0"),
    ]
    assert rec.apply("main").outcome == "UNCHANGED"
    # CI records the version's evaluation: evidence for its genome, outside Git.
    scenario.evaluate(db, "app@1.0.0")
    mark = scenario.last_record_id(db)

    # Commit 2: ask for APPROVED and add a new version; the approval gate holds APPROVED back.
    git_repo.commit(
        {"fleet/app/v1.yaml": version("1.0.0", "APPROVED"), "fleet/app/v2.yaml": version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
         "fleet/app/prompts/v2.md": "You help, briefly.\n"},
        "promote 1.0.0, add 2.0.0",
        author=AUTHOR,
    )  # fmt: skip
    outcome = rec.apply("main")
    scenario.assert_cached_state_is_true(rec)
    assert scenario.records(db, mark) == [
        ("VERSION_UPDATED", "AgentVersion", "app@1.0.0"),
        ("VERSION_CREATED", "AgentVersion", "app@2.0.0"),
        ("VERSION_TRANSITIONED", "AgentVersion", "app@1.0.0"),
        ("APPROVAL_REQUESTED", "Approval", "AgentVersion/app@1.0.0"),
    ]
    assert scenario.rows(db, tables.agent_versions, "name", "lifecycle") == [("app@1.0.0", "CANDIDATE"), ("app@2.0.0", "DRAFT")]
    (approval_id, status), = scenario.rows(db, tables.approvals, "id", "status")  # fmt: skip
    assert status == "PENDING"
    (conditions,) = scenario.rows(db, tables.agent_versions, "conditions", name="app@1.0.0")
    assert (
        conditions[0][0]["message"]
        == f"CANDIDATE -> APPROVED: waiting for 1 approval from release-manager (approval {approval_id})"
    )
    assert rec.apply("main").outcome == "UNCHANGED"  # waiting is not work: nothing is written again
    mark = scenario.last_record_id(db)

    # An operator without a permitted role cannot approve; alice can; the same commit then completes the step.
    with db.begin() as connection, pytest.raises(errors.Forbidden, match="victor"):
        approving.decide(connection, approval_id, "victor", "APPROVE", "lgtm", NOW)
    with db.begin() as connection:
        decided = approving.decide(connection, approval_id, "alice", "APPROVE", "evals pass", NOW)
    assert decided.status == "APPROVED"
    outcome = rec.apply("main")
    assert outcome.outcome == "APPLIED"
    scenario.assert_cached_state_is_true(rec)
    assert scenario.records(db, mark) == [
        ("APPROVAL_DECIDED", "Approval", str(approval_id)),
        ("VERSION_TRANSITIONED", "AgentVersion", "app@1.0.0"),
    ]
    assert scenario.rows(db, tables.agent_versions, "conditions", name="app@1.0.0") == [([],)]
    assert rec.apply("main").outcome == "UNCHANGED"
    mark = scenario.last_record_id(db)

    # Commit 3: dev moves to 2.0.0; prod gets 1.0.0 (APPROVED, so admitted).
    git_repo.commit(
        {
            "fleet/deploy-dev.yaml": deployment("app-dev", "dev", "2.0.0", 2),
            "fleet/deploy-prod.yaml": deployment("app-prod", "prod", "1.0.0", 1),
        },
        "roll out 2.0.0 to dev, 1.0.0 to prod",
        author=AUTHOR,
    )
    sha3 = git_repo.git("rev-parse", "HEAD")
    rec.apply("main")
    scenario.assert_cached_state_is_true(rec)
    assert scenario.records(db, mark) == [
        ("DEPLOYMENT_UPDATED", "Deployment", "app-dev"),
        ("DEPLOYMENT_DECLARED", "Deployment", "app-prod"),
        ("DEPLOYMENT_CREATED", "Deployment", "app-dev"),
        ("DEPLOYMENT_ACTIVATED", "Deployment", "app-dev"),
        ("INSTANCE_CREATED", "Instance", "acme:app-dev-g2-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g2-0"),
        ("INSTANCE_CREATED", "Instance", "acme:app-dev-g2-1"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g2-1"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-dev"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-1"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-1"),
        ("DEPLOYMENT_CREATED", "Deployment", "app-prod"),
        ("DEPLOYMENT_ACTIVATED", "Deployment", "app-prod"),
        ("INSTANCE_CREATED", "Instance", "acme:app-prod-g1-0"),
    ]
    assert scenario.rows(db, tables.deployments, "name", "generation", "version", "previous_version", "state") == [
        ("app-dev", 1, "app@1.0.0", None, "RETIRED"),
        ("app-dev", 2, "app@2.0.0", "app@1.0.0", "ACTIVE"),
        ("app-prod", 1, "app@1.0.0", None, "ACTIVE"),
    ]
    assert scenario.rows(db, tables.instances, "id", "state") == [
        ("acme:app-dev-g1-0", "RETIRED"),
        ("acme:app-dev-g1-1", "RETIRED"),
        ("acme:app-dev-g2-0", "ACTIVE"),
        ("acme:app-dev-g2-1", "ACTIVE"),
        ("acme:app-prod-g1-0", "PROVISIONING"),  # prod activates on the runtime's first heartbeat
    ]
    assert rec.apply("main").outcome == "UNCHANGED"

    # An operator pauses one dev instance: the next reconcile leaves it as it is.
    with db.begin() as connection:
        holds.control_instance(connection, "acme:app-dev-g2-1", "pause", "alice", "investigating", NOW)
    mark = scenario.last_record_id(db)

    # Commit 4: `git revert` of commit 3 rolls dev back to 1.0.0 and removes the prod deployment.
    git_repo.git("revert", "--no-edit", sha3, author=AUTHOR)
    rec.apply("main")
    scenario.assert_cached_state_is_true(rec)
    assert scenario.records(db, mark) == [
        ("DEPLOYMENT_UPDATED", "Deployment", "app-dev"),
        ("DEPLOYMENT_CREATED", "Deployment", "app-dev"),
        ("DEPLOYMENT_ROLLED_BACK", "Deployment", "app-dev"),
        ("DEPLOYMENT_ACTIVATED", "Deployment", "app-dev"),
        ("INSTANCE_CREATED", "Instance", "acme:app-dev-g3-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g3-0"),
        ("INSTANCE_CREATED", "Instance", "acme:app-dev-g3-1"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g3-1"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-dev"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g2-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g2-0"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-prod"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-prod-g1-0"),
        ("DEPLOYMENT_REMOVED", "Deployment", "app-prod"),
    ]
    assert scenario.rows(db, tables.deployments, "name", "generation", "version", "previous_version", "state") == [
        ("app-dev", 1, "app@1.0.0", None, "RETIRED"),
        ("app-dev", 2, "app@2.0.0", "app@1.0.0", "RETIRED"),
        ("app-dev", 3, "app@1.0.0", "app@2.0.0", "ACTIVE"),
        ("app-prod", 1, "app@1.0.0", None, "RETIRED"),
    ]
    assert scenario.rows(db, tables.instances, "id", "state", "held_by", id="acme:app-dev-g2-1") == [
        ("acme:app-dev-g2-1", "PAUSED", "pause")
    ]
    (conditions,) = scenario.rows(db, tables.deployment_specs, "conditions", name="app-dev")
    assert [(c["type"], c["reason"]) for c in conditions[0]] == [("Held", "EmergencyHold")]
    assert "acme:app-dev-g2-1 is PAUSED" in conditions[0][0]["message"]
    assert scenario.rows(db, tables.deployment_specs, "name", "status") == [("app-dev", "ACTIVE"), ("app-prod", "RETIRED")]
    assert rec.apply("main").outcome == "UNCHANGED"
    mark = scenario.last_record_id(db)

    # Commit 5: remove 2.0.0's manifest: the version is retired, its row kept.
    git_repo.commit({"fleet/app/v2.yaml": None}, "drop 2.0.0", author=AUTHOR)
    rec.apply("main")
    scenario.assert_cached_state_is_true(rec)
    assert scenario.records(db, mark) == [("VERSION_RETIRED", "AgentVersion", "app@2.0.0")]
    assert scenario.rows(db, tables.agent_versions, "name", "status") == [("app@1.0.0", "ACTIVE"), ("app@2.0.0", "RETIRED")]

    with db.connect() as connection:
        assert list(chain.verify(connection)) == []


def test_applying_the_applied_commit_again_writes_nothing(git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(scenario.first_commit_files(), author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    with rec.db.connect() as connection:
        before = {
            t.name: connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables.metadata.sorted_tables
        }
    outcomes = [rec.apply("main") for _ in range(3)]
    assert [o.outcome for o in outcomes] == ["UNCHANGED"] * 3
    assert min(o.seconds for o in outcomes) < 0.5  # the quickest of 3: a busy host only adds time
    with rec.db.connect() as connection:
        after = {
            t.name: connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables.metadata.sorted_tables
        }
    assert after == before
