"""``armctl run`` as real processes following a real Git remote (a bare repository in tmp_path).

Poll and webhook refresh, status and metrics after a bad commit, SIGTERM, the one-daemon rule on
SQLite, and on PostgreSQL two replicas where one leads, both serve, and the other takes over
when the leader is killed.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.daemon import procs
from tests.server.serving import tenant_fleet


@pytest.fixture
def remote(tmp_path: Path) -> procs.Remote:
    remote = procs.Remote(tmp_path / "git")
    remote.push(procs.FLEET, message="fleet")
    return remote


@pytest.fixture
def migrated(db_url: str, tmp_path: Path) -> str:
    result = procs.armctl(procs.env(db_url, tmp_path / "admin"), "init")
    assert result.returncode == 0, result.stderr
    return db_url


def test_the_daemon_follows_pushes_by_poll_and_exits_0_on_sigterm(
    remote: procs.Remote, migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    d = procs.Daemon(tmp_path / "d1", migrated, remote.url, poll=0.5).start()
    daemons.append(d)
    d.wait_ready()
    assert d.served_sha() == remote.work.git("rev-parse", "HEAD")
    sha = remote.push({"fleet/extra.yaml": tenant_fleet("globex")}, message="add globex")
    # Served within the wait's deadline, by the poll alone. How soon (the interval plus ~0.5 s on a
    # quiet host) is a figure bench/bench_daemon.py prints: a busy host would make a bound flaky.
    d.wait_until(lambda: d.served_sha() == sha, 10, "the pushed commit to be served")
    token = procs.runtime_token(migrated, tmp_path / "admin")
    assert procs.policy_revision(d, token) == sha
    assert d.metric("arm_leader") == 1
    assert d.stop(signal.SIGTERM) == 0
    assert "Traceback" not in d.log
    assert "daemon stopped" in d.log


def test_a_signed_webhook_applies_a_push_at_once_and_a_forged_one_is_refused(
    remote: procs.Remote, migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    d = procs.Daemon(tmp_path / "d1", migrated, remote.url, poll=600).start()  # polls once, at start
    daemons.append(d)
    d.wait_ready()
    sha = remote.push({"fleet/extra.yaml": tenant_fleet("globex")}, message="add globex")
    forged = d.webhook({"ref": "refs/heads/main", "after": sha}, secret="guess")
    assert forged.status_code == 401
    assert "does not match" in forged.json()["message"]
    other = d.webhook({"ref": "refs/heads/feature", "after": sha})
    assert other.status_code == 202
    assert other.json()["refresh"] is False
    response = d.webhook({"ref": "refs/heads/main", "after": sha})
    assert response.status_code == 202
    assert response.json()["refresh"] is True
    # Far sooner than the next poll (600 s): the webhook refreshed it. How soon is a figure
    # bench/bench_daemon.py prints.
    d.wait_until(lambda: d.served_sha() == sha, 10, "the pushed commit to be served")


def test_a_bad_commit_keeps_the_last_good_one_served_and_shows_in_status_and_metrics(
    remote: procs.Remote, migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    d = procs.Daemon(tmp_path / "d1", migrated, remote.url, poll=0.3).start()
    daemons.append(d)
    d.wait_ready()
    good = d.served_sha()
    bad = remote.push({"fleet/broken.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: x}\nspec: {typo: 1}\n"})
    d.wait_until(lambda: d.metric("arm_reconcile_failing") == 1, 5, "the failure in metrics")
    assert d.get("/readyz").status_code == 200
    assert d.served_sha() == good
    operator = procs.armctl(procs.env(migrated, tmp_path / "admin"), "status", "--format", "json")
    assert operator.returncode == 0, operator.stderr
    assert f"main@sha1:{bad}" in operator.stdout  # the failed revision is named in the conditions
    token = procs.runtime_token(migrated, tmp_path / "admin")
    status = httpx.get(d.url + "/v1/status", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    last = status["daemon"]["lastReconcile"]
    assert last["outcome"] == "FAILED"
    assert "broken.yaml" in last["error"]
    assert "spec.typo" in last["error"]
    assert procs.policy_revision(d, token) == good


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_second_daemon_on_one_sqlite_database_refuses_to_start(
    remote: procs.Remote, migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    first = procs.Daemon(tmp_path / "d1", migrated, remote.url).start()
    daemons.append(first)
    first.wait_ready()
    second = procs.Daemon(tmp_path / "d2", migrated, remote.url).start()
    daemons.append(second)
    assert second.proc is not None
    assert second.proc.wait(30) == 1
    assert f"another 'armctl run' (pid {first.proc.pid if first.proc else '?'}) already runs on" in second.log
    assert "use PostgreSQL" in second.log
    assert "Traceback" not in second.log


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_replicas_on_postgresql_one_leads_both_serve_and_the_other_takes_over(
    remote: procs.Remote, migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    poll = 1.0
    first = procs.Daemon(tmp_path / "d1", migrated, remote.url, poll=poll).start()
    daemons.append(first)
    first.wait_ready()
    second = procs.Daemon(tmp_path / "d2", migrated, remote.url, poll=poll).start()
    daemons.append(second)
    second.wait_ready()
    assert (first.metric("arm_leader"), second.metric("arm_leader")) == (1, 0)
    token = procs.runtime_token(migrated, tmp_path / "admin")

    sha = remote.push({"fleet/extra.yaml": tenant_fleet("globex")}, message="add globex")
    for d in (first, second):
        d.wait_until(lambda d=d: procs.policy_revision(d, token) == sha, poll + 2, "both replicas to serve the push")

    first.stop(signal.SIGKILL)
    newer = remote.push({"fleet/extra.yaml": None}, message="drop globex")
    # The follower takes the lock on its next poll (within one interval) and applies.
    second.wait_until(lambda: second.served_sha() == newer, 2 * poll + 5, "the follower to take over and apply")
    assert second.metric("arm_leader") == 1
    assert procs.policy_revision(second, token) == newer
    assert "leading: holding the advisory lock" in second.log


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_webhook_sent_to_a_follower_wakes_the_leader(
    remote: procs.Remote, migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    leader = procs.Daemon(tmp_path / "d1", migrated, remote.url, poll=600).start()
    daemons.append(leader)
    leader.wait_ready()
    follower = procs.Daemon(tmp_path / "d2", migrated, remote.url, poll=600).start()
    daemons.append(follower)
    follower.wait_ready()
    assert follower.metric("arm_leader") == 0
    sha = remote.push({"fleet/extra.yaml": tenant_fleet("globex")}, message="add globex")
    assert follower.webhook({"ref": "refs/heads/main", "after": sha}).json()["refresh"] is True
    token = procs.runtime_token(migrated, tmp_path / "admin")
    for d in (leader, follower):
        # Both serve it far sooner than the next poll (600 s): the webhook's notification woke the leader.
        d.wait_until(lambda d=d: procs.policy_revision(d, token) == sha, 10, "the push to be served")


def test_sigterm_during_the_first_reconcile_lets_it_finish_and_exits_0(
    migrated: str, tmp_path: Path, daemons: list[procs.Daemon]
) -> None:
    import time

    import sqlalchemy as sa

    from tests.conftest import SAMPLE_FLEET

    remote = procs.Remote(tmp_path / "git")
    remote.work.copy_tree(SAMPLE_FLEET, "fleet")
    sha = remote.push({}, message="sample fleet")
    d = procs.Daemon(tmp_path / "d1", migrated, remote.url).start()
    daemons.append(d)
    deadline = time.monotonic() + 30
    while "armctl run: serving" not in d.log:  # printed as the jobs start: the first poll runs now
        assert time.monotonic() < deadline, d.log
        time.sleep(0.005)
    assert d.stop(signal.SIGTERM) == 0
    engine = sa.create_engine(migrated)
    with engine.connect() as connection:
        applied = connection.execute(sa.text("SELECT applied_sha FROM fleet_state")).scalar()
        outcomes = connection.execute(sa.text("SELECT outcome FROM reconcile_runs")).scalars().all()
    engine.dispose()
    assert (applied, outcomes) == (sha, ["APPLIED"])
    assert "daemon stopped" in d.log
    assert "Traceback" not in d.log
