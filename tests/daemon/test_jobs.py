"""The daemon's jobs, called in process with a frozen clock: poll, heartbeats, retention, webhooks.

The scheduler itself is not started here (tests/daemon/test_run.py runs real daemons); each
test calls a job as the scheduler would and checks what it changed in a real database.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler import errors
from reconciler import settings as settings_
from reconciler.daemon import scheduling
from reconciler.decisions import deciding, events
from reconciler.desired import repository
from reconciler.evidence import keys
from reconciler.reconcile import reporting, running
from reconciler.state import database, opevents, tables
from tests.conftest import GitRepo
from tests.daemon import procs
from tests.server.serving import tenant_fleet

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def daemon(git_repo: GitRepo, db_url: str, tmp_path: Path) -> Iterator[tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock]]:
    git_repo.commit({"fleet/acme.yaml": tenant_fleet("acme")})
    db = database.connect(db_url)
    database.migrate(db)
    clock = clock_.FrozenClock(NOW)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main", webhook_secret="s3cret", heartbeat_timeout_seconds=60)
    reconciler = running.Reconciler(db, repository.Repository(git_repo.path), "fleet", clock=clock)
    decider = deciding.Decider(db, clock=clock)
    d = scheduling.Daemon(settings, db, reconciler, decider, leadership=procs.AlwaysLeads(), clock=clock)
    try:
        yield d, git_repo, clock
    finally:
        d.stop()
        db.dispose()


def _runs(db: sa.Engine) -> list[str]:
    r = tables.reconcile_runs.c
    with db.connect() as connection:
        return list(connection.execute(sa.select(r.outcome).order_by(r.id)).scalars())


def test_readiness_waits_for_the_first_reconcile_and_then_serves_it(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock],
) -> None:
    d, repo, _ = daemon
    assert d.readiness() == (False, "the first reconcile has not finished yet")
    d.poll()
    sha = repo.git("rev-parse", "main")
    assert d.readiness() == (True, f"serving {sha}")
    assert d.status()["lastReconcile"]["outcome"] == "APPLIED"
    assert d.outcomes.get("APPLIED") == 1
    d.poll()  # nothing new: skipped, and the last real outcome stays on show
    assert d.outcomes.get("UNCHANGED") == 1
    assert d.status()["lastReconcile"]["outcome"] == "APPLIED"


def test_a_first_commit_that_fails_leaves_the_daemon_unready_and_says_why(git_repo: GitRepo, db_url: str, tmp_path: Path) -> None:
    git_repo.commit({"fleet/acme.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {nope: 1}\n"})
    db = database.connect(db_url)
    database.migrate(db)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main")
    reconciler = running.Reconciler(db, repository.Repository(git_repo.path), "fleet")
    d = scheduling.Daemon(settings, db, reconciler, deciding.Decider(db), leadership=procs.AlwaysLeads())
    try:
        d.poll()
        ready, reason = d.readiness()
        assert not ready
        assert reason.startswith("no commit has been applied yet: ValidationFailed")
        assert "acme.yaml" in reason
    finally:
        d.stop()
        db.dispose()


def test_an_invalid_commit_keeps_the_last_good_one_and_is_not_retried_until_a_new_push(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock],
) -> None:
    d, repo, _ = daemon
    d.poll()
    good = repo.git("rev-parse", "main")
    bad = repo.commit({"fleet/broken.yaml": "kind: [unclosed\n"}, message="broken")
    for _ in range(3):
        d.poll()
    assert _runs(d.db) == ["APPLIED", "FAILED"]  # refused once, not once per poll
    assert d.applied_sha == good
    assert d.readiness() == (True, f"serving {good}")
    last = d.status()["lastReconcile"]
    assert last["outcome"] == "FAILED"
    assert last["revision"] == f"main@sha1:{bad}"
    assert "broken.yaml" in last["error"]
    assert "arm_reconcile_failing 1" in d.metrics()
    fixed = repo.commit({"fleet/broken.yaml": None}, message="fix")
    d.poll()
    assert d.applied_sha == fixed
    assert "arm_reconcile_failing 0" in d.metrics()
    assert d.status()["lastReconcile"]["error"] is None


def test_instances_without_heartbeats_become_unhealthy_and_recover_on_the_next(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock],
) -> None:
    d, _, clock = daemon
    d.poll()
    with d.db.begin() as connection:
        for instance in ("acme:app-dev-g1-0", "acme:app-dev-g1-1"):
            events.record(connection, "acme", {"type": "HEARTBEAT", "instance": instance}, clock.now())
    clock.advance(45)
    with d.db.begin() as connection:
        events.record(connection, "acme", {"type": "HEARTBEAT", "instance": "acme:app-dev-g1-1"}, clock.now())
    clock.advance(30)  # g1-0: 75 s without a heartbeat, g1-1: 30 s
    d.check_heartbeats()
    i = tables.instances.c
    with d.db.connect() as connection:
        health = dict(connection.execute(sa.select(i.id, i.health).where(i.tenant == "acme")).all())
        generation = connection.execute(sa.select(tables.fleet_state.c.generation)).scalar_one()
    assert health == {"acme:app-dev-g1-0": "UNHEALTHY", "acme:app-dev-g1-1": "HEALTHY"}
    with d.db.connect() as connection:
        shown = [c for c in reporting.status(connection)["conditions"] if c["kind"] == "Instance"]
    assert shown == [
        {"kind": "Instance", "tenant": "acme", "name": "acme:app-dev-g1-0", "type": "Unhealthy", "reason": "HeartbeatMissing",
         "message": f"no heartbeat since {NOW.isoformat()}"}
    ]  # fmt: skip
    d.check_heartbeats()  # already marked: nothing more
    with d.db.begin() as connection:
        e = tables.op_events.c
        reasons = connection.execute(sa.select(e.payload).where(e.type == "HEALTH")).scalars().all()
        assert reasons == [{"health": "UNHEALTHY", "reason": f"no heartbeat for 60 s (last {NOW.isoformat()})"}]
        assert connection.execute(sa.select(tables.fleet_state.c.generation)).scalar_one() == generation
        events.record(connection, "acme", {"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}, clock.now())
        assert connection.execute(sa.select(i.health).where(i.id == "acme:app-dev-g1-0")).scalar_one() == "HEALTHY"
        # health is not declared in Git: no re-plan of the fleet (a canary step reads it afresh)
        assert connection.execute(sa.select(tables.fleet_state.c.generation)).scalar_one() == generation
        assert not [c for c in reporting.status(connection)["conditions"] if c["kind"] == "Instance"]


def test_retention_archives_old_op_events_then_deletes_them(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock],
) -> None:
    d, _, _ = daemon
    d.poll()
    with d.db.begin() as connection:
        opevents.add(
            connection,
            [
                {"tenant": "acme", "at": NOW - dt.timedelta(days=40), "type": "COST", "instance": "acme:app-dev-g1-0",
                 "payload": {"amount": 0.5}},
                {"tenant": "acme", "at": NOW - dt.timedelta(days=1), "type": "COST", "instance": "acme:app-dev-g1-0",
                 "payload": {"amount": 0.25}},
            ],
        )  # fmt: skip
    d.retain()
    with d.db.connect() as connection:
        left = connection.execute(sa.select(tables.op_events.c.payload)).scalars().all()
    assert left == [{"amount": 0.25}]
    (archive,) = sorted(d.settings.archive_dir.glob("*.jsonl.gz"))
    lines = [json.loads(line) for line in gzip.decompress(archive.read_bytes()).splitlines()]
    assert [line["payload"] for line in lines] == [{"amount": 0.5}]


def _github(body: bytes, secret: str = "s3cret", event: str = "push") -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": signature, "x-github-event": event}


def test_webhooks_refresh_only_for_pushes_to_the_followed_branch(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock],
) -> None:
    d, _, _ = daemon
    main = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    other = json.dumps({"ref": "refs/heads/feature", "after": "b" * 40}).encode()
    assert d.webhook(_github(main), main) == {"refresh": True, "ref": "refs/heads/main", "after": "a" * 40}
    assert d.webhook(_github(other), other) == {"refresh": False, "reason": "push to refs/heads/feature; following main"}
    assert d.webhook(_github(b"{}", event="ping"), b"{}") == {"refresh": False, "reason": "not a push"}
    assert d.webhook({"x-gitlab-token": "s3cret", "x-gitlab-event": "Push Hook"}, main)["refresh"] is True
    with pytest.raises(errors.Unauthenticated, match="X-Hub-Signature-256"):
        d.webhook(_github(main, secret="wrong"), main)
    with pytest.raises(errors.Unauthenticated, match="X-Gitlab-Token"):
        d.webhook({"x-gitlab-token": "wrong"}, main)
    with pytest.raises(errors.Unauthenticated, match="no signature"):
        d.webhook({}, main)
    with pytest.raises(errors.ConfigError, match="not JSON"):
        d.webhook(_github(b"not json"), b"not json")


def test_the_git_poll_applies_a_canarys_first_step_and_only_the_canary_job_takes_the_next(
    git_repo: GitRepo, db_url: str, tmp_path: Path
) -> None:
    from tests.reconcile import test_canary

    fleet = test_canary.start(git_repo, db_url)  # app-staging at 1.0.0, a commit moving it to 2.0.0
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main")
    d = scheduling.Daemon(settings, fleet.db, fleet.rec, deciding.Decider(fleet.db), leadership=procs.AlwaysLeads())
    try:
        d.poll()
        assert fleet.live_by_version() == {"app@1.0.0": 2, "app@2.0.0": 1}
        fleet.heartbeat("acme:app-staging-g2-0")
        d.poll()
        d.poll()
        assert fleet.live_by_version() == {"app@1.0.0": 2, "app@2.0.0": 1}  # polls never step
        d.canary()
        assert fleet.live_by_version() == {"app@1.0.0": 1, "app@2.0.0": 2}
        d.canary()  # the new instance has not reported yet: the canary waits
        assert fleet.live_by_version() == {"app@1.0.0": 1, "app@2.0.0": 2}
        fleet.heartbeat("acme:app-staging-g2-1")
        d.canary()
        assert fleet.live_by_version() == {"app@2.0.0": 3}
        assert [r for r in fleet.new_records() if r[0] == "DEPLOYMENT_CANARY_STEPPED"] == [
            ("DEPLOYMENT_CANARY_STEPPED", "Deployment", "app-staging")
        ] * 3
    finally:
        d.stop()


def test_an_unhealthy_canary_rolls_back_even_while_the_head_is_an_invalid_commit(
    git_repo: GitRepo, db_url: str, tmp_path: Path
) -> None:
    from tests.reconcile import test_canary

    fleet = test_canary.start(git_repo, db_url, auto_rollback=True)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main")
    d = scheduling.Daemon(settings, fleet.db, fleet.rec, deciding.Decider(fleet.db), leadership=procs.AlwaysLeads())
    try:
        d.poll()  # the canary's first step
        fleet.heartbeat("acme:app-staging-g2-0")
        git_repo.commit({"fleet/broken.yaml": "kind: [unclosed\n"}, message="broken")
        d.poll()  # refused: the last good commit stays in force, and so does its canary
        assert d.status()["lastReconcile"]["outcome"] == "FAILED"
        fleet.go_stale("acme:app-staging-g2-0")
        d.canary()
        assert fleet.live_by_version() == {"app@1.0.0": 3}
    finally:
        d.stop()


def test_a_stop_gives_up_on_a_fetch_that_never_answers_after_its_grace(git_repo: GitRepo, db_url: str, tmp_path: Path) -> None:
    import socket
    import subprocess
    import threading
    import time

    git_repo.commit({"fleet/acme.yaml": tenant_fleet("acme")})
    repo = repository.Repository(f"file://{git_repo.path}", cache_dir=tmp_path / "cache")
    # A git host on loopback that accepts connections and never answers them.
    host = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(host.accept()[0]), daemon=True).start()
    url = f"git://127.0.0.1:{host.getsockname()[1]}/fleet.git"
    subprocess.run(["git", "-C", str(repo._path), "remote", "set-url", "origin", url], check=True)
    db = database.connect(db_url)
    database.migrate(db)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main")
    d = scheduling.Daemon(
        settings, db, running.Reconciler(db, repo, "fleet"), deciding.Decider(db), leadership=procs.AlwaysLeads()
    )
    d.start()
    deadline = time.monotonic() + 30
    while not held:  # the first poll is fetching: the host took its connection
        assert time.monotonic() < deadline, "the daemon's first fetch never reached the git host"
        time.sleep(0.01)
    began = time.monotonic()
    assert d.stop(grace_seconds=1.0) is False
    assert time.monotonic() - began < 4
    assert len(held) == 1  # the fetch did reach the host
    db.dispose()
    for connection in [*held, host]:
        connection.close()


def test_the_checkpoint_job_verifies_genomes_and_anchors_what_moved_since(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock], tmp_path: Path
) -> None:
    d, _, clock = daemon
    d.reconciler.signer = keys.create(tmp_path / "keys", NOW)
    d.poll()  # the apply signs checkpoint 1
    cp = tables.chain_checkpoints.c
    with d.db.connect() as connection:
        head = connection.execute(sa.select(sa.func.max(tables.change_records.c.seq))).scalar_one()
        assert connection.execute(sa.select(cp.number, cp.seq)).all() == [(1, head)]
    d.checkpoint()  # nothing moved: no checkpoint
    v = tables.agent_versions
    with d.db.begin() as connection:
        genome = connection.execute(sa.select(v.c.genome)).scalar_one()
        connection.execute(v.update().values(genome={**genome, "model": {"provider": "p", "name": "other"}}))
    clock.advance(300)
    d.checkpoint()
    with d.db.connect() as connection:
        assert connection.execute(sa.select(v.c.integrity)).scalar_one() == "FAILED"
        # The VERSION_INTEGRITY_FAILED record is anchored by the checkpoint of the same run.
        assert connection.execute(sa.select(cp.number, cp.seq).order_by(cp.number)).all() == [(1, head), (2, head + 1)]
    assert d.decider.decide(deciding.Request("acme:app-dev-g1-0", "crm.lookup")).reasons[0].startswith("VERSION_INTEGRITY_FAILED")


def test_the_notifications_job_tells_a_refused_commit_once(
    daemon: tuple[scheduling.Daemon, GitRepo, clock_.FrozenClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.notifications.receiver import Receiver, free_port

    d, repo, clock = daemon
    channel = (
        "apiVersion: arm/v1\nkind: NotificationChannel\nmetadata: {name: chat, tenant: acme}\n"
        "spec: {url: {fromEnv: TEST_DAEMON_CHAT_URL}, format: slack, events: [RECONCILE_FAILED]}\n"
    )
    repo.commit({"fleet/chat.yaml": channel})
    d.poll()
    bad = repo.commit({"fleet/broken.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: Not_A_Name}\n"})
    d.poll()
    clock.advance(60)
    d.poll()  # the same refused commit: not retried, not told again
    port = free_port()
    monkeypatch.setenv("TEST_DAEMON_CHAT_URL", f"http://127.0.0.1:{port}/chat")
    with Receiver(port) as receiver:
        d.notify()
        d.notify()
    (got,) = receiver.received
    text = json.loads(got.body)["text"]
    assert text.startswith(f"[ARM] RECONCILE_FAILED: the reconcile of main@sha1:{bad} failed")
    assert "fleet/broken.yaml" in text
