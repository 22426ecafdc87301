"""A tenant's kill switch and the instances that never started, on SQLite and PostgreSQL.

Resuming a tenant releases its hold, but never stands in for a runtime's first heartbeat: an
instance paused while still PROVISIONING goes back to PROVISIONING. An instance the reconciler
creates while the switch is pulled is created held by it, so its row says what its decisions say.
"""

from __future__ import annotations

import datetime as dt

from reconciler.oversight import holds
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR, deployment

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)

QA = """\
apiVersion: arm/v1
kind: Environment
metadata: {name: qa}
spec:
  admission: {minLifecycle: DRAFT}
"""

PERMISSIONS = """\
apiVersion: arm/v1
kind: Role
metadata: {name: incident}
spec:
  permissions: ["tenants:pause", "tenants:resume"]
---
apiVersion: arm/v1
kind: Operator
metadata: {name: ivy}
spec: {email: ivy@acme.example, roles: [incident]}
"""


def test_resuming_a_tenant_leaves_never_started_instances_provisioning_and_new_ones_are_held(
    git_repo: GitRepo, db_url: str
) -> None:
    files = scenario.first_commit_files()  # dev (activation: immediate): app-dev, 2 replicas
    files |= {
        "fleet/qa.yaml": QA,
        "fleet/incident.yaml": PERMISSIONS,
        "fleet/deploy-qa.yaml": deployment("app-qa", "qa", "1.0.0", 1),
    }
    git_repo.commit(files, "add app", author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    db = rec.db
    rec.apply("main")
    with db.begin() as connection:
        holds.control_tenant(connection, "acme", "pause", "ivy", "incident 7", NOW)
    git_repo.commit({"fleet/deploy-qa.yaml": deployment("app-qa", "qa", "1.0.0", 2)}, "scale qa", author=AUTHOR)
    mark = scenario.last_record_id(db)
    rec.apply("main")
    assert ("EMERGENCY_PAUSE", "Instance", "acme:app-qa-g1-1") in scenario.records(db, mark)
    assert scenario.rows(db, tables.instances, "id", "state", "held_by") == [
        ("acme:app-dev-g1-0", "PAUSED", "tenant-pause"),
        ("acme:app-dev-g1-1", "PAUSED", "tenant-pause"),
        ("acme:app-qa-g1-0", "PAUSED", "tenant-pause"),
        ("acme:app-qa-g1-1", "PAUSED", "tenant-pause"),  # created under the switch: held by it
    ]
    scenario.assert_cached_state_is_true(rec)

    with db.begin() as connection:
        resumed = holds.control_tenant(connection, "acme", "resume", "ivy", "resolved", NOW)
    assert {(c.instance, c.after) for c in resumed} == {
        ("acme:app-dev-g1-0", "ACTIVE"),  # immediate activation: it was running
        ("acme:app-dev-g1-1", "ACTIVE"),
        ("acme:app-qa-g1-0", "PROVISIONING"),  # never heard from: it still waits for its heartbeat
        ("acme:app-qa-g1-1", "PROVISIONING"),
    }
    assert scenario.rows(db, tables.instances, "id", "state", "held_by") == [
        ("acme:app-dev-g1-0", "ACTIVE", None),
        ("acme:app-dev-g1-1", "ACTIVE", None),
        ("acme:app-qa-g1-0", "PROVISIONING", None),
        ("acme:app-qa-g1-1", "PROVISIONING", None),
    ]
    assert rec.apply("main").outcome in ("NOOP", "UNCHANGED")  # Git agrees: nothing to converge
