"""Two promises about going back and letting go, on SQLite and PostgreSQL.

A `git revert` of a deployment's version is a rollback that happens at once, also where the
environment requires approval for a new version: it ran that version just before. An instance
an operator held while Git moved on converges to Git once released: the next reconcile retires
it, so `replicas` instances run, not one more.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from reconciler.oversight import approving, holds
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR, deployment, version

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)

STAGING = """\
apiVersion: arm/v1
kind: Environment
metadata: {name: staging}
spec:
  admission: {minLifecycle: DRAFT, requireApproval: true}
  activation: immediate
"""


def _approve_pending(db: sa.Engine) -> int:
    a = tables.approvals.c
    with db.begin() as connection:
        (approval_id,) = connection.execute(sa.select(a.id).where(a.status == "PENDING")).scalars().all()
        approving.decide(connection, approval_id, "alice", "APPROVE", "ship it", NOW)
    return int(approval_id)


def test_a_revert_rolls_back_at_once_where_new_versions_need_approval(git_repo: GitRepo, db_url: str) -> None:
    files = scenario.first_commit_files()
    files["fleet/staging.yaml"] = STAGING
    files["fleet/deploy-dev.yaml"] = deployment("app-stg", "staging", "1.0.0", 1)
    git_repo.commit(files, "add app", author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    db = rec.db
    rec.apply("main")
    _approve_pending(db)  # the first version in staging needs its approval
    rec.apply("main")
    git_repo.commit(
        {"fleet/app/v2.yaml": version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
         "fleet/app/prompts/v2.md": "You help, briefly.\n", "fleet/deploy-dev.yaml": deployment("app-stg", "staging", "2.0.0", 1)},
        "move staging to 2.0.0", author=AUTHOR,
    )  # fmt: skip
    move = git_repo.git("rev-parse", "HEAD")
    rec.apply("main")
    _approve_pending(db)  # so does a new one
    rec.apply("main")
    assert scenario.rows(db, tables.deployments, "generation", "version", "state") == [
        (1, "app@1.0.0", "RETIRED"),
        (2, "app@2.0.0", "ACTIVE"),
    ]
    mark = scenario.last_record_id(db)

    git_repo.git("revert", "--no-edit", move, author=AUTHOR)
    assert rec.apply("main").outcome == "APPLIED"
    written = scenario.records(db, mark)
    assert ("APPROVAL_REQUESTED", "Approval", "Deployment/app-stg") not in written
    assert ("DEPLOYMENT_ROLLED_BACK", "Deployment", "app-stg") in written
    assert scenario.rows(db, tables.deployments, "generation", "version", "state") == [
        (1, "app@1.0.0", "RETIRED"),
        (2, "app@2.0.0", "RETIRED"),
        (3, "app@1.0.0", "ACTIVE"),
    ]
    assert scenario.rows(db, tables.approvals, "status") == [("APPROVED",), ("APPROVED",)]  # none pending


def test_an_instance_released_after_git_moved_on_is_retired_by_the_next_reconcile(git_repo: GitRepo, db_url: str) -> None:
    files = scenario.first_commit_files()
    files["fleet/deploy-dev.yaml"] = deployment("app-dev", "dev", "1.0.0", 1)
    git_repo.commit(files, "add app", author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    db = rec.db
    rec.apply("main")
    with db.begin() as connection:
        holds.control_instance(connection, "acme:app-dev-g1-0", "pause", "alice", "investigating", NOW)
    git_repo.commit(
        {"fleet/app/v2.yaml": version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
         "fleet/app/prompts/v2.md": "You help, briefly.\n", "fleet/deploy-dev.yaml": deployment("app-dev", "dev", "2.0.0", 1)},
        "move dev to 2.0.0", author=AUTHOR,
    )  # fmt: skip
    rec.apply("main")
    (conditions,) = scenario.rows(db, tables.deployment_specs, "conditions", name="app-dev")
    assert "acme:app-dev-g1-0 is PAUSED" in conditions[0][0]["message"]  # held drift, reported
    with db.begin() as connection:
        holds.control_instance(connection, "acme:app-dev-g1-0", "resume", "alice", "all clear", NOW)
    mark = scenario.last_record_id(db)

    assert rec.apply("main").outcome == "APPLIED"
    assert scenario.records(db, mark) == [
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-dev-g1-0"),
    ]
    assert scenario.rows(db, tables.instances, "id", "state", "held_by") == [
        ("acme:app-dev-g1-0", "RETIRED", None),
        ("acme:app-dev-g2-0", "ACTIVE", None),
    ]
    assert scenario.rows(db, tables.deployment_specs, "conditions", name="app-dev") == [([],)]
    scenario.assert_cached_state_is_true(rec)
    assert rec.apply("main").outcome == "UNCHANGED"
