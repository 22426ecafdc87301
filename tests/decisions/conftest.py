"""The decider over an applied fleet with a catalog and envelope (``calls``), for the decision tests."""

from __future__ import annotations

import pytest

from reconciler.decisions import deciding
from tests.conftest import GitRepo
from tests.decisions.calls import CATALOG, ENVELOPE, Clock
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR


@pytest.fixture
def decider(git_repo: GitRepo, db_url: str) -> deciding.Decider:
    git_repo.commit(scenario.first_commit_files() | {"fleet/base.yaml": CATALOG, "fleet/envelopes.yaml": ENVELOPE}, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    return deciding.Decider(rec.db, clock=Clock())  # type: ignore[arg-type]
