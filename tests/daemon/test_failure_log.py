"""A failed reconcile's log line names its problems (on one line, and as a list for JSON logs),
not only how many there are."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reconciler import settings as settings_
from reconciler.daemon import scheduling
from reconciler.decisions import deciding
from reconciler.desired import repository
from reconciler.reconcile import running
from reconciler.state import database
from tests.conftest import GitRepo
from tests.daemon import procs


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failed_reconcile_logs_every_problem_on_one_line(
    git_repo: GitRepo, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    git_repo.commit({"fleet/acme.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {nope: 1, typo: 2}\n"})
    db = database.connect(db_url)
    database.migrate(db)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main")
    reconciler = running.Reconciler(db, repository.Repository(git_repo.path), "fleet")
    d = scheduling.Daemon(settings, db, reconciler, deciding.Decider(db), leadership=procs.AlwaysLeads())
    try:
        with caplog.at_level(logging.ERROR, logger="reconciler.daemon.scheduling"):
            d.poll()
    finally:
        d.stop()
        db.dispose()
    (record,) = [r for r in caplog.records if "failed; the last good commit stays in force" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message
    assert "2 problems: fleet/acme.yaml:4, document 0, field spec.nope: " in message
    assert "field spec.typo" in message
    assert [p.split(":")[0] for p in record.problems] == ["fleet/acme.yaml", "fleet/acme.yaml"]  # type: ignore[attr-defined]
