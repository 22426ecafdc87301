"""Benchmark: ``armctl run`` while its Git remote is down or never answers.

One scratch fleet (the sample fleet in ``fleet/``) is pushed to a bare "origin" and applied from
``file://`` (``armctl apply``, which mirrors it into the state directory). Then, on the same
SQLite database, a daemon is started in each case and the script prints how long after the process
started ``/readyz`` answered 200 and a decision was answered, and how long SIGTERM took to end
it and with which exit code:

- up: the remote answers (the baseline);
- down: the remote's directory is gone (the mirror in the state directory is not);
- silent: an HTTP "Git host" that accepts connections and never answers, and no mirror yet
  (a fresh state directory): the first poll's clone hangs until the stop kills it.

Targets: ready and answering within the start-up time of the baseline in every case; SIGTERM
exits 0 within a few seconds, also while the clone hangs. A figure printer, not a test.

    python bench/bench_outage.py
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _armctl(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _case(name: str, env: dict[str, str], repo: str, token: str) -> None:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "reconciler",
        "run",
        "--repo",
        repo,
        "--ref",
        "main",
        "--port",
        str(port),
        "--poll-interval",
        "1",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = answered = None
    body = {"instance": "acme:support-agent-dev-g1-0", "tool": "kb.search-articles", "args": {}}
    try:
        while time.monotonic() - started < 60 and answered is None:
            try:
                if ready is None and httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    ready = time.monotonic() - started
                if ready is not None:
                    reply = httpx.post(url + "/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=2)
                    if reply.status_code == 200:
                        answered = time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stopped = time.monotonic() - stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def shown(value: float | None) -> str:
        return "never" if value is None else f"{value:5.2f} s"

    print(f"{name:7} ready {shown(ready)}  first decision {shown(answered)}  SIGTERM → exit {code} in {stopped:5.2f} s")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as silent:
        base = Path(tmp)
        work, bare = base / "work", base / "origin.git"
        shutil.copytree(ROOT / "fleet", work / "fleet")
        _git(base, "init", "-q", "-b", "main", str(work))
        _git(work, "add", "-A")
        _git(work, "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "fleet")
        _git(base, "clone", "-q", "--bare", str(work), str(bare))
        env = {**os.environ, "ARM_STATE_DIR": str(base / "state"), "ARM_DATABASE_URL": f"sqlite:///{base / 'arm.db'}"}
        _armctl(env, "init")
        _armctl(env, "apply", "--repo", bare.as_uri(), "--ref", "main")  # mirrors it into the state directory
        token = _armctl(env, "token", "create", "--name", "bench", "--kind", "runtime", "--tenant", "acme")
        _case("up", env, bare.as_uri(), token)
        shutil.rmtree(bare)
        _case("down", env, bare.as_uri(), token)
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        fresh = {**env, "ARM_STATE_DIR": str(base / "fresh-state")}
        _case("silent", fresh, f"http://127.0.0.1:{silent.getsockname()[1]}/acme/fleet.git", token)


if __name__ == "__main__":
    main()
