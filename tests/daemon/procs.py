"""Real ``armctl run`` daemons as subprocesses, a bare Git remote, and a signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from reconciler.state import locking
from tests.conftest import GitRepo
from tests.server.serving import tenant_fleet

SECRET = "webhook-s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Remote:
    """A bare repository (the "origin" a daemon follows) and a working clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        self.work = GitRepo(root / "work")
        self.work.git("remote", "add", "origin", str(self.bare))
        self.url = self.bare.as_uri()  # file://: the daemon mirrors and fetches it like any remote

    def push(self, files: dict[str, str | None], message: str = "change") -> str:
        sha = self.work.commit(files, message=message)
        self.work.git("push", "-q", "origin", "main")
        return sha


def armctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True, timeout=60)


class Daemon:
    """One ``armctl run`` process on a free loopback port; its output goes to files in ``home``."""

    def __init__(self, home: Path, database_url: str, repo_url: str, *, poll: float = 0.5, **env: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ARM_STATE_DIR": str(home / "state"),
            "ARM_DATABASE_URL": database_url,
            "ARM_WEBHOOK_SECRET": SECRET,
            **env,
        }
        self.args = ["--log-level", "info", "run", "--repo", repo_url, "--ref", "main", "--port", str(self.port)]
        self.args += ["--poll-interval", str(poll)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *self.args],
            env=self.env,
            stdout=open(self.home / "stdout", "wb"),  # noqa: SIM115 - the child owns it
            stderr=open(self.home / "stderr", "wb"),  # noqa: SIM115
        )
        return self

    @property
    def log(self) -> str:
        return (self.home / "stderr").read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kwargs)

    def wait_until(self, predicate: Any, timeout: float, what: str) -> float:
        """Seconds until ``predicate()`` held; fails after ``timeout`` with the daemon's log."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} waiting for {what}:\n{self.log}")
            try:
                if predicate():
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.log}")

    def served_sha(self) -> str | None:
        response = self.get("/readyz")
        return response.json().get("appliedSha") if response.status_code == 200 else None

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_until(lambda: self.get("/readyz").status_code == 200, timeout, "/readyz 200")

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def webhook(self, payload: dict[str, Any], secret: str = SECRET) -> httpx.Response:
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push", "Content-Type": "application/json"}
        return httpx.post(self.url + "/v1/webhooks/git", content=body, headers=headers, timeout=5)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon did not stop within {timeout} s of signal {sig}:\n{self.log}") from None
        return self.proc.returncode


class AlwaysLeads(locking.Leadership):
    """Leads without a lock: for tests that run one daemon in process (locks: test_run.py, test_leading.py)."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass

    @property
    def leading(self) -> bool:
        return True


FLEET = {"fleet/acme.yaml": tenant_fleet("acme")}


def env(database_url: str, home: Path) -> dict[str, str]:
    import os

    return {**os.environ, "ARM_DATABASE_URL": database_url, "ARM_STATE_DIR": str(home)}


def runtime_token(database_url: str, home: Path) -> str:
    result = armctl(env(database_url, home), "token", "create", "--name", "rt", "--kind", "runtime", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def policy_revision(d: Daemon, token: str) -> str:
    body = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {}}
    response = httpx.post(d.url + "/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["policyRevision"])
