"""Canary rollouts over real commits, on SQLite and PostgreSQL: step by step while healthy,
wait while instances come up, halt or roll back when they are not, and stay rolled back.

Heartbeats go through ``events.record`` and staleness through ``events.mark_stale``, the code
paths of ``POST /v1/events`` and the daemon; controls through ``oversight.holds``. Every apply is
checked against a fresh read of the database (the state a long-lived reconciler keeps).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.decisions import events
from reconciler.oversight import holds
from reconciler.reconcile import reporting, rolling, running
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.canaries import canary, fleet_files
from tests.reconcile.scenario import AUTHOR

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


class Fleet:
    """A reconciler over a repository, with the runtime's and the operators' side of things."""

    def __init__(self, repo: GitRepo, rec: running.Reconciler) -> None:
        self.repo = repo
        self.rec = rec
        self.db = rec.db
        self.mark = 0
        self.clock = NOW

    def apply(self, *, advance: bool = True) -> running.Outcome:
        outcome = self.rec.apply("main", advance=advance)
        if outcome.outcome == "APPLIED":
            scenario.assert_cached_state_is_true(self.rec)
        return outcome

    def commit(self, number: str, **kwargs: bool) -> None:
        self.repo.commit({"fleet/deploy.yaml": canary(number, **kwargs)}, f"app-staging to {number}", author=AUTHOR)

    def new_records(self) -> list[tuple[str, str, str]]:
        """Change records written since the last call."""
        found = scenario.records(self.db, self.mark)
        self.mark = scenario.last_record_id(self.db)
        return found

    def heartbeat(self, *instances: str) -> None:
        with self.db.begin() as connection:
            for instance in instances:
                events.record(connection, "acme", {"type": "HEARTBEAT", "instance": instance}, self.clock)

    def heartbeat_all(self) -> None:
        self.heartbeat(*[iid for iid, state, _ in self.instances() if state != "RETIRED"])

    def go_stale(self, *instances: str) -> None:
        """Every instance but ``instances`` keeps beating; the daemon's staleness job marks those UNHEALTHY."""
        self.clock += dt.timedelta(minutes=10)
        self.heartbeat(*[iid for iid, state, _ in self.instances() if state == "ACTIVE" and iid not in instances])
        with self.db.begin() as connection:
            assert sorted(events.mark_stale(connection, self.clock, 90)) == sorted(instances)

    def control(self, instance: str, control: str) -> None:
        with self.db.begin() as connection:
            holds.control_instance(connection, instance, control, "alice", "canary looks wrong", self.clock)

    def instances(self) -> list[tuple[str, str, str]]:
        return scenario.rows(self.db, tables.instances, "id", "state", "version")

    def live_by_version(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, state, number in self.instances():
            if state != "RETIRED":
                counts[number] = counts.get(number, 0) + 1
        return counts

    def records_table(self) -> list[tuple[int, str, str, str | None, int | None]]:
        return scenario.rows(self.db, tables.deployments, "generation", "version", "state", "rollout", "canary_step")

    def conditions(self) -> list[tuple[str, str, str]]:
        (stored,) = scenario.rows(self.db, tables.deployment_specs, "conditions", name="app-staging")
        return [(c["type"], c["reason"], c["message"]) for c in stored[0]]


def start(git_repo: GitRepo, db_url: str, **kwargs: bool) -> Fleet:
    """app-staging at 1.0.0 with its three instances up and healthy, then a commit moving it to 2.0.0."""
    git_repo.commit(fleet_files("1.0.0", **kwargs), "app at 1.0.0", author=AUTHOR)
    fleet = Fleet(git_repo, scenario.make_reconciler(db_url, git_repo))
    assert fleet.apply().outcome == "APPLIED"
    fleet.heartbeat_all()
    fleet.apply()
    fleet.new_records()
    fleet.commit("2.0.0", **kwargs)
    return fleet


def assert_chain_intact(fleet: Fleet) -> None:
    with fleet.db.connect() as connection:
        assert list(chain.verify(connection)) == []


@pytest.mark.parametrize(
    ("replicas", "weight", "instances"),
    [
        (3, 10, 1),
        (3, 50, 2),
        (3, 100, 3),
        (10, 10, 1),
        (10, 25, 3),
        (10, 99, 10),
        (1, 10, 1),
        (4, 50, 2),
        (0, 50, 0),
    ],
)
def test_a_canary_serves_the_ceiling_of_its_weight_and_at_least_one_instance(replicas: int, weight: int, instances: int) -> None:
    assert rolling.canary_count(replicas, weight) == instances


def test_a_canary_steps_10_50_100_while_its_instances_are_healthy(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)

    # The reconcile that sees the new version takes the first step: one of three instances.
    assert fleet.apply().outcome == "APPLIED"
    assert fleet.new_records() == [
        ("DEPLOYMENT_UPDATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_CREATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_ACTIVATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_CANARY_STEPPED", "Deployment", "app-staging"),
        ("INSTANCE_CREATED", "Instance", "acme:app-staging-g2-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g1-2"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g1-2"),
    ]
    assert fleet.live_by_version() == {"app@1.0.0": 2, "app@2.0.0": 1}
    assert fleet.records_table() == [(1, "app@1.0.0", "ACTIVE", None, None), (2, "app@2.0.0", "ACTIVE", "PROGRESSING", 0)]
    assert fleet.conditions() == [
        (
            "Progressing",
            "CanaryProgressing",
            "canary app@2.0.0 at 10% (step 1 of 3): 0 of 1 canary instances healthy, 2 left on app@1.0.0; "
            "the next step waits for all of them to be ACTIVE and HEALTHY",
        )
    ]
    with fleet.db.connect() as connection:
        (stepped,) = connection.execute(
            sa.select(tables.change_records).where(tables.change_records.c.type == "DEPLOYMENT_CANARY_STEPPED")
        ).mappings()
    assert stepped["sha"] == git_repo.git("rev-parse", "HEAD")
    assert (stepped["before"]["weight"], stepped["after"]["weight"], stepped["after"]["instances"]) == (0, 10, 1)

    fleet.heartbeat("acme:app-staging-g2-0")
    assert fleet.apply().outcome == "APPLIED"
    assert fleet.new_records() == [
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g2-0"),  # the heartbeat: PROVISIONING → ACTIVE
        ("DEPLOYMENT_CANARY_STEPPED", "Deployment", "app-staging"),
        ("INSTANCE_CREATED", "Instance", "acme:app-staging-g2-1"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g1-1"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g1-1"),
    ]
    assert fleet.live_by_version() == {"app@1.0.0": 1, "app@2.0.0": 2}

    fleet.heartbeat("acme:app-staging-g2-1")
    assert fleet.apply().outcome == "APPLIED"
    assert fleet.new_records() == [
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g2-1"),
        ("DEPLOYMENT_CANARY_STEPPED", "Deployment", "app-staging"),
        ("INSTANCE_CREATED", "Instance", "acme:app-staging-g2-2"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-staging"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g1-0"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g1-0"),
    ]
    assert fleet.live_by_version() == {"app@2.0.0": 3}
    assert fleet.records_table() == [(1, "app@1.0.0", "RETIRED", None, None), (2, "app@2.0.0", "ACTIVE", "COMPLETE", 2)]
    assert fleet.conditions() == []

    # Done: the same commit is UNCHANGED again, whatever advance says.
    assert fleet.apply().outcome == "UNCHANGED"
    assert fleet.apply(advance=False).outcome == "UNCHANGED"
    assert fleet.new_records() == []
    assert_chain_intact(fleet)


def test_a_canary_waits_while_its_instances_are_provisioning(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply()
    fleet.new_records()
    with fleet.db.connect() as connection:
        runs = connection.execute(sa.select(sa.func.count()).select_from(tables.reconcile_runs)).scalar_one()
    for _ in range(3):
        outcome = fleet.apply()
        assert outcome.outcome == "UNCHANGED"  # nothing due: no records, not even a run
        assert outcome.plan is not None and [c.reason for c in outcome.plan.conditions] == ["CanaryProgressing"]
    assert fleet.new_records() == []
    with fleet.db.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tables.reconcile_runs)).scalar_one() == runs
    assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "PROGRESSING", 0)

    # ACTIVE but no heartbeat-reported health yet (say, after a resume) still waits.
    fleet.heartbeat("acme:app-staging-g2-0")
    with fleet.db.begin() as connection:
        connection.execute(
            tables.instances.update().where(tables.instances.c.id == "acme:app-staging-g2-0").values(health="UNKNOWN")
        )
    fleet.apply()
    assert [r[0] for r in fleet.new_records()] == ["INSTANCE_TRANSITIONED"]  # the heartbeat's, no step
    assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "PROGRESSING", 0)


def test_a_reconcile_that_may_not_advance_leaves_the_canary_at_its_step(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply(advance=False)  # the Git poll: the first step belongs to the commit
    assert "DEPLOYMENT_CANARY_STEPPED" in [r[0] for r in fleet.new_records()]
    fleet.heartbeat("acme:app-staging-g2-0")
    fleet.new_records()
    assert fleet.apply(advance=False).outcome == "NOOP"  # the heartbeat bumped the state generation
    assert fleet.apply(advance=False).outcome == "UNCHANGED"
    assert fleet.new_records() == []
    assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "PROGRESSING", 0)
    assert fleet.live_by_version() == {"app@1.0.0": 2, "app@2.0.0": 1}

    # The canary job may advance: it steps, even though the commit and the generation are the same.
    assert fleet.apply().outcome == "APPLIED"
    assert fleet.new_records()[0] == ("DEPLOYMENT_CANARY_STEPPED", "Deployment", "app-staging")
    assert fleet.live_by_version() == {"app@1.0.0": 1, "app@2.0.0": 2}


def _stale(fleet: Fleet) -> None:
    fleet.go_stale("acme:app-staging-g2-0")


def _quarantined(fleet: Fleet) -> None:
    fleet.control("acme:app-staging-g2-0", "quarantine")


def _paused(fleet: Fleet) -> None:
    fleet.control("acme:app-staging-g2-0", "pause")


UNHEALTHY: list[tuple[str, Callable[[Fleet], None], str]] = [
    ("unhealthy", _stale, "acme:app-staging-g2-0 is UNHEALTHY"),
    ("quarantined", _quarantined, "acme:app-staging-g2-0 is QUARANTINED"),
    ("paused", _paused, "acme:app-staging-g2-0 is PAUSED"),
]


@pytest.mark.parametrize(("how", "spoil", "why"), UNHEALTHY, ids=[u[0] for u in UNHEALTHY])
def test_an_unhealthy_canary_halts_at_its_step_and_says_so_once(
    git_repo: GitRepo, db_url: str, how: str, spoil: Callable[[Fleet], None], why: str
) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply()
    fleet.heartbeat("acme:app-staging-g2-0")
    spoil(fleet)
    fleet.new_records()

    fleet.apply()
    assert fleet.new_records() == [("DEPLOYMENT_CANARY_HALTED", "Deployment", "app-staging")]
    assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "HALTED", 0)
    assert fleet.live_by_version() == {"app@1.0.0": 2, "app@2.0.0": 1}
    halted = (
        "Halted",
        "CanaryUnhealthy",
        f"canary app@2.0.0 halted at 10% (step 1 of 3): {why}; it goes on once they are healthy again",
    )
    assert halted in fleet.conditions()
    with fleet.db.connect() as connection:
        report = reporting.status(connection)
    assert {"kind": "Deployment", "name": "app-staging", "type": "Halted"}.items() <= next(
        c for c in report["conditions"] if c["type"] == "Halted"
    ).items()
    assert report["rollouts"] == [
        {"tenant": "acme", "name": "app-staging", "generation": 2, "version": "app@2.0.0", "previousVersion": "app@1.0.0",
         "rollout": "HALTED", "weight": 10, "step": 1, "steps": 3, "state": "ACTIVE"}
    ]  # fmt: skip

    for _ in range(2):  # halted is not news: nothing more is written
        fleet.apply()
        fleet.apply(advance=False)
    assert fleet.new_records() == []
    assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "HALTED", 0)

    if how == "unhealthy":  # heartbeats come back: the canary resumes and takes its next step
        fleet.heartbeat("acme:app-staging-g2-0")
        fleet.apply()
        assert [r[0] for r in fleet.new_records()][:2] == ["DEPLOYMENT_CANARY_RESUMED", "DEPLOYMENT_CANARY_STEPPED"]
        assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "PROGRESSING", 1)
    assert_chain_intact(fleet)


@pytest.mark.parametrize(("how", "spoil", "why"), UNHEALTHY, ids=[u[0] for u in UNHEALTHY])
def test_an_unhealthy_canary_rolls_back_with_auto_rollback(
    git_repo: GitRepo, db_url: str, how: str, spoil: Callable[[Fleet], None], why: str
) -> None:
    fleet = start(git_repo, db_url, auto_rollback=True)
    fleet.apply()
    fleet.heartbeat("acme:app-staging-g2-0")
    spoil(fleet)
    fleet.new_records()

    # The Git poll does not act on health; it only says what the canary job will do.
    fleet.apply(advance=False)
    assert fleet.new_records() == []
    assert any("rolls back on the next canary step (autoRollback)" in c[2] for c in fleet.conditions())

    assert fleet.apply().outcome == "APPLIED"
    held = how != "unhealthy"  # a paused or quarantined instance stays as the operator left it
    assert fleet.new_records() == [
        ("DEPLOYMENT_ROLLED_BACK", "Deployment", "app-staging"),
        ("INSTANCE_CREATED", "Instance", "acme:app-staging-g1-3"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-staging"),
    ] + ([] if held else [("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g2-0")] * 2)
    assert fleet.records_table() == [(1, "app@1.0.0", "ACTIVE", None, None), (2, "app@2.0.0", "RETIRED", "ROLLED_BACK", 0)]
    assert fleet.live_by_version() == ({"app@1.0.0": 3} | ({"app@2.0.0": 1} if held else {}))
    with fleet.db.connect() as connection:
        rolled_back = (
            connection.execute(sa.select(tables.change_records).where(tables.change_records.c.type == "DEPLOYMENT_ROLLED_BACK"))
            .mappings()
            .one()
        )
    assert (rolled_back["before"]["state"], rolled_back["after"]["state"]) == ("ACTIVE", "ROLLING_BACK")
    assert (rolled_back["before"]["version"], rolled_back["after"]["version"]) == ("app@2.0.0", "app@1.0.0")
    assert rolled_back["after"]["reason"] == f"canary unhealthy: {why}"
    sticky = (
        "RolledBack",
        "CanaryRolledBack",
        f"rolled back: canary unhealthy; change spec.version to roll out again (app@2.0.0 was rolled back to app@1.0.0 at 10%: {why})",
    )
    assert sticky in fleet.conditions()
    assert_chain_intact(fleet)


def test_a_rolled_back_version_is_not_retried_until_spec_version_changes(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url, auto_rollback=True)
    fleet.apply()
    fleet.heartbeat("acme:app-staging-g2-0")
    fleet.go_stale("acme:app-staging-g2-0")
    fleet.apply()
    assert fleet.records_table()[-1][3] == "ROLLED_BACK"
    fleet.heartbeat_all()
    fleet.new_records()

    # The same commit again, and a commit that does not touch the deployment: no new attempt.
    for advance in (True, False, True):
        fleet.apply(advance=advance)
    git_repo.commit({"fleet/app/template.yaml": scenario.TEMPLATE.replace("role: helps", "role: helps a lot")}, author=AUTHOR)
    fleet.apply()
    assert fleet.new_records() == [("TEMPLATE_UPDATED", "AgentTemplate", "app")]
    assert [c[1] for c in fleet.conditions()] == ["CanaryRolledBack"]
    assert len(fleet.records_table()) == 2
    assert fleet.live_by_version() == {"app@1.0.0": 3}

    # Another version rolls out normally, from the record that was restored.
    fleet.commit("3.0.0", auto_rollback=True)
    fleet.apply()
    assert [r[0] for r in fleet.new_records()][:4] == [
        "DEPLOYMENT_UPDATED",
        "DEPLOYMENT_CREATED",
        "DEPLOYMENT_ACTIVATED",
        "DEPLOYMENT_CANARY_STEPPED",
    ]
    assert fleet.records_table()[-1] == (3, "app@3.0.0", "ACTIVE", "PROGRESSING", 0)
    assert [c[1] for c in fleet.conditions()] == ["CanaryProgressing"]
    with fleet.db.connect() as connection:
        (previous,) = connection.execute(
            sa.select(tables.deployments.c.previous_version).where(tables.deployments.c.generation == 3)
        ).one()
    assert previous == "app@1.0.0"
    assert fleet.live_by_version() == {"app@1.0.0": 2, "app@3.0.0": 1}


def test_coming_back_to_a_rolled_back_version_later_tries_it_again(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url, auto_rollback=True)
    fleet.apply()
    fleet.heartbeat("acme:app-staging-g2-0")
    fleet.go_stale("acme:app-staging-g2-0")
    fleet.apply()
    fleet.commit("1.0.0", auto_rollback=True)  # acknowledge: back to what runs
    fleet.apply()
    assert fleet.conditions() == []
    fleet.new_records()
    fleet.commit("2.0.0", auto_rollback=True)
    fleet.apply()
    assert "DEPLOYMENT_CANARY_STEPPED" in [r[0] for r in fleet.new_records()]
    assert fleet.records_table()[-1] == (3, "app@2.0.0", "ACTIVE", "PROGRESSING", 0)


def test_a_revert_during_a_canary_rolls_it_back_at_once(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply()
    fleet.new_records()
    git_repo.git("revert", "--no-edit", "HEAD", author=AUTHOR)
    fleet.apply(advance=False)  # a Git change, not a canary step: the poll applies it
    assert fleet.new_records() == [
        ("DEPLOYMENT_UPDATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_ROLLED_BACK", "Deployment", "app-staging"),
        ("INSTANCE_CREATED", "Instance", "acme:app-staging-g1-3"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-staging"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g2-0"),
    ]
    assert fleet.records_table() == [(1, "app@1.0.0", "ACTIVE", None, None), (2, "app@2.0.0", "RETIRED", "ABORTED", 0)]
    assert fleet.conditions() == []
    assert fleet.live_by_version() == {"app@1.0.0": 3}


def test_a_new_version_during_a_canary_supersedes_it(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply()
    fleet.new_records()
    fleet.commit("3.0.0")
    fleet.apply()
    assert fleet.new_records() == [
        ("DEPLOYMENT_UPDATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_CREATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_ACTIVATED", "Deployment", "app-staging"),
        ("DEPLOYMENT_CANARY_STEPPED", "Deployment", "app-staging"),
        ("INSTANCE_CREATED", "Instance", "acme:app-staging-g3-0"),
        ("DEPLOYMENT_RETIRED", "Deployment", "app-staging"),
        ("INSTANCE_TRANSITIONED", "Instance", "acme:app-staging-g2-0"),
    ]
    assert fleet.records_table() == [
        (1, "app@1.0.0", "ACTIVE", None, None),
        (2, "app@2.0.0", "RETIRED", "ABORTED", 0),
        (3, "app@3.0.0", "ACTIVE", "PROGRESSING", 0),
    ]
    assert fleet.live_by_version() == {"app@1.0.0": 2, "app@3.0.0": 1}


def test_removing_a_deployment_during_a_canary_retires_both_records(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply()
    git_repo.commit({"fleet/deploy.yaml": None}, "drop app-staging", author=AUTHOR)
    fleet.apply()
    assert [state for _, _, state, _, _ in fleet.records_table()] == ["RETIRED", "RETIRED"]
    assert fleet.live_by_version() == {}
    assert fleet.apply().outcome == "UNCHANGED"


def test_a_database_from_before_canaries_upgrades_and_rolls_out_by_steps(git_repo: GitRepo, db_url: str) -> None:
    from alembic import command

    from reconciler.state import database

    git_repo.commit(fleet_files("1.0.0"), "app at 1.0.0", author=AUTHOR)
    fleet = Fleet(git_repo, scenario.make_reconciler(db_url, git_repo))
    fleet.apply()
    fleet.heartbeat_all()
    with fleet.db.begin() as connection:
        command.downgrade(database._config(connection), "0006")
    assert database.schema_revision(fleet.db) == "0006"
    assert database.migrate(fleet.db) == ("0006", database.SCHEMA_HEAD)
    assert fleet.records_table() == [(1, "app@1.0.0", "ACTIVE", None, None)]

    fleet.rec = scenario.make_reconciler(db_url, git_repo)  # a new armctl on the upgraded database
    fleet.commit("2.0.0")
    fleet.apply()
    assert fleet.records_table()[-1] == (2, "app@2.0.0", "ACTIVE", "PROGRESSING", 0)
    assert fleet.live_by_version() == {"app@1.0.0": 2, "app@2.0.0": 1}


def test_a_canary_scaled_to_no_replicas_completes(git_repo: GitRepo, db_url: str) -> None:
    fleet = start(git_repo, db_url)
    fleet.apply()
    fleet.heartbeat("acme:app-staging-g2-0")
    fleet.repo.commit({"fleet/deploy.yaml": canary("2.0.0", replicas=0)}, "scale to 0", author=AUTHOR)
    for _ in range(4):
        fleet.apply()
    assert fleet.records_table()[-1][3] == rolling.COMPLETE
    assert fleet.live_by_version() == {}
