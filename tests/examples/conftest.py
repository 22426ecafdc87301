"""Fixtures of the example tests: the sample fleet applied with the real ``armctl`` to SQLite
(once per session, copied for each test), and real ``armctl serve`` / ``armctl run``
subprocesses on a free loopback port.

A server is stopped when its block or fixture ends (SIGTERM, then SIGKILL); on Linux it is also
asked to die with the test process, so an interrupted run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import samples
from tests.conftest import SAMPLE_FLEET, GitRepo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT_ROOT / "examples"
BIN = Path(sys.executable).parent
ARMCTL = str(BIN / "armctl")

#: Settings that would point the examples at something other than their scratch database.
_FOREIGN_SETTINGS = ("ARM_STATE_DIR", "ARM_DATABASE_URL", "ARM_REPO", "ARM_REF", "ARM_PATH", "ARM_OPA_URL", "ARM_OPA_TOKEN")


def example_env(state: Path | None, **extra: str) -> dict[str, str]:
    """The environment an example runs in: the venv's ``armctl`` first on PATH, the given state
    directory (none: the example picks its own), no Git configuration of the machine, and no
    ``ARM_*`` setting from outside."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_SETTINGS}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        PYTHONUNBUFFERED="1",
    )
    if state is not None:
        env["ARM_STATE_DIR"] = str(state)
    env.update(extra)
    return env


@dataclasses.dataclass(frozen=True)
class Fleet:
    """A fleet repository at ``repo``, applied (commit ``sha``) to SQLite in ``state``."""

    repo: Path
    state: Path
    sha: str

    @property
    def env(self) -> dict[str, str]:
        return example_env(self.state)

    @property
    def database(self) -> str:
        return f"sqlite:///{self.state / 'arm.db'}"

    def armctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [ARMCTL, *args], cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"armctl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", "-C", str(self.repo), *args], env=self.env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def history(self, *args: str) -> list[dict[str, Any]]:
        """``armctl history --format json`` with these filters."""
        records: list[dict[str, Any]] = json.loads(self.armctl("history", "--format", "json", "--limit", "10000", *args).stdout)
        return records

    def query(self, statement: sa.Executable) -> list[sa.Row[Any]]:
        engine = sa.create_engine(self.database)
        try:
            with engine.connect() as connection:
                return list(connection.execute(statement))
        finally:
            engine.dispose()


@dataclasses.dataclass(frozen=True)
class Served:
    """``armctl serve`` over ``fleet``: its base URL and a runtime token of tenant acme."""

    url: str
    token: str
    fleet: Fleet
    log: Path


@dataclasses.dataclass(frozen=True)
class _Template:
    fleet: Fleet
    token: str


@pytest.fixture(scope="session")
def _applied_template(tmp_path_factory: pytest.TempPathFactory) -> _Template:
    """The sample fleet applied once per session (``armctl init`` + ``apply``, its CI's evaluation
    runs recorded with ``armctl eval submit``, ``apply`` again, and a runtime token); each test
    gets a copy of its state directory."""
    root = tmp_path_factory.mktemp("applied")
    repo = GitRepo(root / "sample")
    repo.copy_tree(SAMPLE_FLEET, "fleet")
    sha = repo.commit(message="sample fleet")
    applied = Fleet(repo.path, root / "state", sha)
    applied.armctl("init")
    applied.armctl("apply", "--repo", str(repo.path), "--ref", "main")
    for args in samples.submit_args():
        applied.armctl(*args)
    applied.armctl("apply", "--repo", str(repo.path), "--ref", "main")
    token = applied.armctl("token", "create", "--name", "example-runtime", "--kind", "runtime", "--tenant", "acme")
    return _Template(applied, token.stdout.strip().splitlines()[-1])


@pytest.fixture
def fleet(_applied_template: _Template, tmp_path: Path) -> Fleet:
    """A private copy of the applied sample fleet's state (SQLite database and caches)."""
    template = _applied_template.fleet
    shutil.copytree(template.state, tmp_path / "state")
    return Fleet(template.repo, tmp_path / "state", template.sha)


@pytest.fixture
def served(_applied_template: _Template, fleet: Fleet, tmp_path: Path) -> Iterator[Served]:
    log = tmp_path / "serve.log"
    with serving(fleet, log) as url:
        yield Served(url, _applied_template.token, fleet, log)


@contextlib.contextmanager
def serving(fleet: Fleet, log: Path, ready: str = "/readyz") -> Iterator[str]:
    """``armctl serve`` over ``fleet`` on a free loopback port until the block ends; yields its
    base URL once ``ready`` answers 200."""

    def args(port: int) -> list[str]:
        return ["serve", "--host", "127.0.0.1", "--port", str(port)]

    with running_armctl(args, fleet.env, fleet.repo, log, ready) as (url, _):
        yield url


@contextlib.contextmanager
def running_armctl(
    args: Callable[[int], list[str]], env: Mapping[str, str], cwd: Path, log: Path, ready: str = "/readyz", attempts: int = 3
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``armctl <args(port)>`` serving on a free loopback port until the block ends (stopped with
    SIGTERM, then SIGKILL); yields its base URL and process once ``ready`` answers 200. A port
    taken between choosing and binding is retried."""
    for attempt in range(attempts):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [ARMCTL, *args(port)],
                cwd=cwd,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # dies with the tests
            )
        try:
            if _wait_ready(url + ready, process, deadline=time.monotonic() + 60):
                yield url, process
                return
        finally:
            stop(process)
        if attempt == attempts - 1:
            raise AssertionError(f"armctl {args(port)[0]} did not become ready on {url}:\n{log.read_text(errors='replace')}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def _wait_ready(url: str, process: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if http_status(url) == 200:
            return True
        time.sleep(0.1)
    return False


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate ``process`` and wait for it; kill it if it does not go within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
