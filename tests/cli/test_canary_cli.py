"""``armctl apply`` takes one canary step per run; ``armctl status`` shows where rollouts stand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from reconciler.decisions import events
from reconciler.state import database
from tests.cli.test_reconcile_cli import Armctl
from tests.conftest import GitRepo
from tests.reconcile.canaries import canary, fleet_files
from tests.reconcile.scenario import AUTHOR

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def heartbeat(db_url: str, *instances: str) -> None:
    engine = database.connect(db_url)
    try:
        with engine.begin() as connection:
            for instance in instances:
                events.record(connection, "acme", {"type": "HEARTBEAT", "instance": instance}, NOW)
    finally:
        engine.dispose()


def test_each_armctl_apply_takes_one_canary_step(tmp_path: Path, git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(fleet_files("1.0.0"), "app at 1.0.0", author=AUTHOR)
    armctl = Armctl(tmp_path, db_url, git_repo.path)
    assert armctl("init").returncode == 0
    assert armctl("apply").returncode == 0
    heartbeat(db_url, *(f"acme:app-staging-g1-{n}" for n in range(3)))
    git_repo.commit({"fleet/deploy.yaml": canary("2.0.0")}, "app-staging to 2.0.0", author=AUTHOR)

    first = armctl("apply")
    assert first.returncode == 0, first.stderr
    assert "DEPLOYMENT_CANARY_STEPPED" in first.stdout and "canary weight 0% → 10% (step 1)" in first.stdout
    assert "Deployment app-staging: canary app@2.0.0 at 10% (step 1 of 3): 0 of 1 canary instances healthy" in first.stdout

    waiting = armctl("apply")  # the canary's instance has not reported yet: nothing to do
    assert "is already applied; nothing to do" in waiting.stdout
    assert "Deployment app-staging: canary app@2.0.0 at 10% (step 1 of 3)" in waiting.stdout

    heartbeat(db_url, "acme:app-staging-g2-0")
    second = armctl("apply")
    assert "canary weight 10% → 50% (step 2): 2 instances on the new version" in second.stdout

    status = armctl.json("status")
    assert [(r["name"], r["weight"], r["rollout"]) for r in status["rollouts"]] == [("app-staging", 50, "PROGRESSING")]  # type: ignore[index]
    text = armctl("status").stdout
    assert "Canary rollouts" in text and "app@1.0.0 → app@2.0.0 at 50% (step 2 of 3) PROGRESSING" in text
