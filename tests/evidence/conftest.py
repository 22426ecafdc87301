"""Fixtures of the evidence tests: the evidence fleet applied to a real database, and served on
loopback with a token of each kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler.desired import repository
from reconciler.oversight import access
from reconciler.reconcile import running
from reconciler.server import app as server_app
from reconciler.state import database
from tests.conftest import GitRepo
from tests.evidence import fleetdata
from tests.reconcile import scenario
from tests.server.serving import Server


@dataclasses.dataclass
class Fleet:
    engine: sa.Engine
    reconciler: running.Reconciler
    repo: GitRepo
    clock: clock_.FrozenClock

    def apply(self) -> running.Outcome:
        return self.reconciler.apply("main")


@pytest.fixture
def fleet(git_repo: GitRepo, db_url: str) -> Iterator[Fleet]:
    git_repo.commit(fleetdata.files(), "the evidence fleet", author=scenario.AUTHOR)
    engine = database.connect(db_url)
    database.migrate(engine)
    clock = clock_.FrozenClock(fleetdata.NOW)
    rec = running.Reconciler(engine, repository.Repository(git_repo.path), "fleet", clock=clock)
    rec.apply("main")
    try:
        yield Fleet(engine, rec, git_repo, clock)
    finally:
        engine.dispose()


@dataclasses.dataclass
class Api:
    client: httpx.Client
    fleet: Fleet
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def api(fleet: Fleet) -> Iterator[Api]:
    now = fleetdata.NOW
    with fleet.engine.begin() as connection:
        tokens = {
            "ci": access.create(connection, "pipeline", "ci", "acme", now),
            "ci-other": access.create(connection, "other-pipeline", "ci", "acme", now, templates=["other"]),
            "runtime": access.create(connection, "rt", "runtime", "acme", now),
            "alice": access.create(connection, "alice", "operator", "acme", now, operator="alice"),
            "victor": access.create(connection, "victor", "operator", "acme", now, operator="victor"),
        }
    app = server_app.create_app(fleet.engine, clock=fleet.clock, sweep_seconds=None, policy_seconds=None)
    with Server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield Api(client, fleet, tokens)
