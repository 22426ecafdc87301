"""The heartbeat job honours each environment: its ``heartbeatTimeoutSeconds``, and no heartbeat
expected where instances are activated at once. Called in process with a frozen clock, on SQLite
and PostgreSQL; the scheduler is started only to read the job's pace.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler import settings as settings_
from reconciler.daemon import scheduling
from reconciler.decisions import deciding, events
from reconciler.desired import repository
from reconciler.reconcile import running
from reconciler.state import database, tables
from tests.conftest import GitRepo
from tests.daemon import procs
from tests.reconcile import scenario
from tests.reconcile.scenario import deployment

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)

STAGING = """\
apiVersion: arm/v1
kind: Environment
metadata: {name: staging}
spec: {heartbeatTimeoutSeconds: 2}
"""


def _health(db: sa.Engine) -> dict[str, str]:
    i = tables.instances.c
    with db.connect() as connection:
        return {r.id: f"{r.state}/{r.health}" for r in connection.execute(sa.select(i.id, i.state, i.health))}


def test_each_environment_has_its_own_heartbeat_timeout_and_immediate_ones_need_none(
    git_repo: GitRepo, db_url: str, tmp_path: Path
) -> None:
    files = scenario.first_commit_files()  # dev: activation immediate, no timeout stated
    files |= {"fleet/staging.yaml": STAGING, "fleet/deploy-dev.yaml": deployment("app-dev", "dev", "1.0.0", 1),
              "fleet/deploy-stg.yaml": deployment("app-stg", "staging", "1.0.0", 1)}  # fmt: skip
    git_repo.commit(files)
    db = database.connect(db_url)
    database.migrate(db)
    clock = clock_.FrozenClock(NOW)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main", heartbeat_timeout_seconds=60)
    reconciler = running.Reconciler(db, repository.Repository(git_repo.path), "fleet", clock=clock)
    d = scheduling.Daemon(
        settings, db, reconciler, deciding.Decider(db, clock=clock), leadership=procs.AlwaysLeads(), clock=clock
    )
    try:
        d.poll()
        with db.begin() as connection:
            events.record(connection, "acme", {"type": "HEARTBEAT", "instance": "acme:app-stg-g1-0"}, clock.now())
        clock.advance(3)  # staging's 2 s have passed, the default 60 s have not
        d.check_heartbeats()
        assert _health(db) == {"acme:app-dev-g1-0": "ACTIVE/UNKNOWN", "acme:app-stg-g1-0": "ACTIVE/UNHEALTHY"}
        clock.advance(3600)  # dev was activated at once and expects no heartbeat: silence is fine
        d.check_heartbeats()
        assert _health(db)["acme:app-dev-g1-0"] == "ACTIVE/UNKNOWN"
        with db.begin() as connection:  # once a runtime reports there, its silence counts (default 60 s)
            events.record(connection, "acme", {"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}, clock.now())
        clock.advance(61)
        d.check_heartbeats()
        assert _health(db)["acme:app-dev-g1-0"] == "ACTIVE/UNHEALTHY"
        with db.connect() as connection:
            e = tables.op_events.c
            reasons = connection.execute(sa.select(e.instance, e.payload).where(e.type == "HEALTH").order_by(e.id)).all()
        assert [(instance, payload["reason"].split(" (")[0]) for instance, payload in reasons] == [
            ("acme:app-stg-g1-0", "no heartbeat for 2 s"),
            ("acme:app-dev-g1-0", "no heartbeat for 60 s"),
        ]
        # The job runs every third of the shortest timeout an environment states (at least 1 s).
        d.scheduler.start(paused=True)
        d.scheduler.add_job(d.check_heartbeats, scheduling.IntervalTrigger(seconds=20), id="heartbeats")
        d.check_heartbeats()
        assert d.scheduler.get_job("heartbeats").trigger.interval.total_seconds() == 1.0
    finally:
        d.stop()
        db.dispose()
