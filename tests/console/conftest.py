"""The console served as ``armctl serve`` serves it, over a two-tenant fleet applied to a real
database, and one headless Chromium (Debian's, driven by Playwright) shared by the browser tests.

The browser lives as long as the module that uses it (the one module of browser tests, so one
browser per test session): Playwright's sync API keeps an event loop of its own in the thread,
which must be gone before tests that run their own loops."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from reconciler.desired import repository
from reconciler.oversight import access
from reconciler.reconcile import running, simulating
from reconciler.server import app as server_app
from reconciler.state import database
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.server.serving import NOW, Server, tenant_fleet

#: How Chromium is started here: the distribution's build, no sandbox (root in a container), and
#: nothing that reaches the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


@dataclasses.dataclass
class Console:
    base: str
    client: httpx.Client  # a runtime's and the API's view of the same server
    engine: sa.Engine
    tokens: dict[str, str]


@pytest.fixture
def console(git_repo: GitRepo, db_url: str) -> Iterator[Console]:
    # olga's on-call role also reads the audit trail; vic holds no role at all.
    fleets = {
        f"fleet/{t}.yaml": tenant_fleet(t).replace('"tenants:*"]', '"tenants:*", "audit:read"]') for t in ("acme", "globex")
    }
    git_repo.commit(fleets, author=scenario.AUTHOR)
    # A branch under review that denies crm.lookup: never applied, asked by the simulator.
    git_repo.git("checkout", "-q", "-b", "deny-lookups")
    denied = fleets["fleet/acme.yaml"].replace(
        "  approvalAbove: YELLOW\n", "  approvalAbove: YELLOW\n  tools: {deny: [crm.lookup]}\n"
    )
    git_repo.commit({"fleet/acme.yaml": denied}, author=scenario.AUTHOR, message="deny crm.lookup")
    git_repo.git("checkout", "-q", "main")
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        running.Reconciler(engine, repository.Repository(git_repo.path), "fleet").apply("main")
        with engine.begin() as connection:
            tokens = {
                "runtime": access.create(connection, "rt", "runtime", "acme", NOW),
                "olga": access.create(connection, "ops", "operator", "acme", NOW, operator="olga"),
                "vic": access.create(connection, "vic", "operator", "acme", NOW, operator="vic"),
                "globex-olga": access.create(connection, "gxo", "operator", "globex", NOW, operator="olga"),
                "revoked": access.create(connection, "gone", "operator", "acme", NOW, operator="olga"),
            }
        source = simulating.Source(lambda: repository.Repository(git_repo.path), "fleet")
        with Server(server_app.create_app(engine, source=source)) as base, httpx.Client(base_url=base, timeout=10) as client:
            yield Console(base, client, engine, tokens)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed for the console's browser tests: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
