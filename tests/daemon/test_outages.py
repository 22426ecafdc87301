"""``armctl run`` and ``armctl serve`` on a bad day: a Git remote that is down or never answers,
and the signals an operator sends.

The daemon serves what the store has applied from its first second, whatever the remote does; a
failed fetch says git's own reason; SIGTERM and Ctrl-C (SIGINT) end it with 0, also while a
clone hangs on a host that never answers.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemon import procs


@pytest.fixture
def silent_host() -> Iterator[str]:
    """An HTTP "Git host" that accepts connections (the kernel completes the handshake) and
    never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/acme/fleet.git"


def test_the_daemon_serves_its_applied_commit_while_the_remote_is_down_or_hangs(
    db_url: str, tmp_path: Path, daemons: list[procs.Daemon], silent_host: str
) -> None:
    admin = procs.env(db_url, tmp_path / "admin")
    assert procs.armctl(admin, "init").returncode == 0
    remote = procs.Remote(tmp_path / "git")
    sha = remote.push(procs.FLEET, message="fleet")
    first = procs.Daemon(tmp_path / "d", db_url, remote.url).start()
    daemons.append(first)
    first.wait_ready()
    assert first.stop(signal.SIGINT) == 0  # Ctrl-C: a clean stop, not "Aborted." and 1
    token = procs.runtime_token(db_url, tmp_path / "admin")

    # The remote is gone; the mirror in the state directory and the applied commit are not.
    shutil.rmtree(remote.bare)
    down = procs.Daemon(tmp_path / "d", db_url, remote.url).start()
    daemons.append(down)
    down.wait_ready()
    assert procs.policy_revision(down, token) == sha
    down.wait_until(lambda: "cannot fetch" in down.log, 10, "the failed fetch in the log")
    status = httpx.get(down.url + "/v1/status", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    last = status["daemon"]["lastReconcile"]
    assert last["outcome"] == "FAILED"
    # git's reason, not GitPython's wrapper line (which ended in a lone quote)
    assert "fatal:" in last["error"] and "does not appear to be a git repository" in last["error"], last["error"]
    assert down.stop(signal.SIGTERM) == 0

    # A host that never answers, and no mirror yet: HTTP is served at once from the store, and
    # SIGTERM ends the hanging clone and the process cleanly.
    hanging = procs.Daemon(tmp_path / "h", db_url, silent_host).start()
    daemons.append(hanging)
    hanging.wait_ready()
    assert hanging.get("/readyz").json()["appliedSha"] == sha
    assert procs.policy_revision(hanging, token) == sha
    assert hanging.stop(signal.SIGTERM) == 0
    assert "Traceback" not in first.log + down.log + hanging.log


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_armctl_serve_says_where_it_listens_and_exits_0_on_sigterm_and_sigint(db_url: str, tmp_path: Path) -> None:
    env = procs.env(db_url, tmp_path / "admin")
    assert procs.armctl(env, "init").returncode == 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = procs.free_port()
        err = tmp_path / f"serve-{sig}.err"
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, err.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.02)
            assert f"serving http://127.0.0.1:{port}" in err.read_text()
            proc.send_signal(sig)
            assert proc.wait(20) == 0, err.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_with_the_remote_gone_the_daemon_applies_what_its_mirror_holds(db_url: str, tmp_path: Path) -> None:
    from reconciler import settings as settings_
    from reconciler.daemon import scheduling
    from reconciler.decisions import deciding
    from reconciler.desired import repository
    from reconciler.reconcile import running
    from reconciler.state import database
    from tests.server.serving import tenant_fleet

    remote = procs.Remote(tmp_path / "git")
    first = remote.push(procs.FLEET, message="fleet")
    db = database.connect(db_url)
    database.migrate(db)
    settings = settings_.Settings(state_dir=tmp_path / "state", ref="main")
    mirror = repository.Repository(remote.url, cache_dir=settings.cache_dir, clone=False)
    d = scheduling.Daemon(
        settings, db, running.Reconciler(db, mirror, "fleet"), deciding.Decider(db), leadership=procs.AlwaysLeads()
    )
    try:
        d.poll()  # clones, then applies
        assert d.applied_sha == first
        second = remote.push({"fleet/globex.yaml": tenant_fleet("globex")}, message="add globex")
        mirror.fetch()  # the mirror got the commit, then the remote went away before it was applied
        shutil.rmtree(remote.bare)
        d.poll()
        assert d.applied_sha == second  # served from the mirror
        assert d.readiness() == (True, f"serving {second}")
        last = d.status()["lastReconcile"]
        assert last["outcome"] == "FAILED" and "cannot fetch" in last["error"] and "fatal:" in last["error"]
        assert "arm_reconcile_failing 1" in d.metrics()
    finally:
        d.stop()
        db.dispose()
