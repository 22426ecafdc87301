from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from reconciler.desired import repository
from reconciler.oversight import access
from reconciler.reconcile import running
from reconciler.server import app as server_app
from reconciler.state import database
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.server.serving import NOW, Server, tenant_fleet


@pytest.fixture(params=["protocol"])
def transport(request: pytest.FixtureRequest) -> str:
    """How ``api`` serves: as ``armctl serve`` does; decision tests also ask for "asgi"
    (``@pytest.mark.parametrize("transport", serving.TRANSPORTS, indirect=True)``)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def api(git_repo: GitRepo, db_url: str, transport: str) -> Iterator[tuple[httpx.Client, sa.Engine, dict[str, str]]]:
    git_repo.commit(
        {"fleet/acme.yaml": tenant_fleet("acme"), "fleet/globex.yaml": tenant_fleet("globex")}, author=scenario.AUTHOR
    )
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        with Server(server_app.create_app(engine), transport) as base, httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/readyz").status_code == 503  # nothing applied yet
            running.Reconciler(engine, repository.Repository(git_repo.path), "fleet").apply("main")
            with engine.begin() as connection:
                made = {
                    "runtime": access.create(connection, "rt", "runtime", "acme", NOW),
                    "scoped": access.create(connection, "one", "runtime", "acme", NOW, instances=["acme:app-dev-g1-0"]),
                    "operator": access.create(connection, "ops", "operator", "acme", NOW, operator="olga"),
                    "viewer": access.create(connection, "vic", "operator", "acme", NOW, operator="vic"),
                    "globex": access.create(connection, "gx", "runtime", "globex", NOW),
                    "globex-operator": access.create(connection, "gxo", "operator", "globex", NOW, operator="olga"),
                    "expired": access.create(connection, "old", "runtime", "acme", NOW - dt.timedelta(days=10), ttl_days=1),
                    "revoked": access.create(connection, "gone", "runtime", "acme", NOW),
                }
                access.revoke(connection, "gone", NOW)
            yield client, engine, made
    finally:
        engine.dispose()  # its pooled connections, or PostgreSQL runs out of them over the suite
