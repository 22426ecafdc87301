"""Benchmark: ``armctl run`` daemons following a Git remote: push-to-served latency, idle cost.

Each part builds a scratch "origin" (a bare clone of the generated fleet, ``fleetgen``: 1,000
templates x 10 versions by default) with a working clone that pushes to it, a fresh database
(``armctl init``), and starts real daemons (``armctl run``) that follow ``main`` of the origin by
``file://`` URL. A commit is a 3-file change (``fleetgen.change_files``) pushed with ``git push``.
A replica *serves* a commit when a decision it answers (``POST /v1/decisions`` with a runtime
token, for an unknown instance: DENY, still with ``policyRevision``) names the pushed SHA; every
replica is asked every ~10 ms from the moment ``git push`` returns.

- webhook: daemons poll every 600 s, so only the signed GitHub webhook (sent after each push,
  to the replicas in turn: a follower passes it on to the leader with NOTIFY) triggers a refresh;
- poll: daemons poll every ``--interval`` s; pushes land at random phases of the poll;
- idle: one daemon polls an unchanged fleet every 1 s for ``--polls`` polls (counted from
  ``arm_reconcile_runs_total{outcome="UNCHANGED"}``); its RSS (``VmRSS``) and CPU time
  (``/proc/<pid>/stat``, its own and its waited-for children's: the ``git fetch`` of each poll)
  are sampled at the start, every 100 polls and at the end. 600 polls take ~10 minutes. No
  agent sends heartbeats, so ~90 s in the heartbeat job marks the instances UNHEALTHY: that
  bumps the generation, and the next poll runs one full reconcile (NOOP) inside the window.

Each push prints, per replica, when it served the commit and how long that first decision
naming it took (the decision path reloads what it resolves instances against on a new commit),
and the leader's own reconcile time (``/v1/status``: fetch and apply). The decisions asked
every 10 ms cost the daemons some CPU too.

A daemon whose first apply stops using CPU while processes it forked (parse workers) are alive
is stuck (a guard: the daemon once forked parse workers from its threads and could hang): its stacks and its
workers' are dumped to its log (``PYTHONFAULTHANDLER``, SIGABRT) and shown, it is started again,
and the summary counts it.

Stores: SQLite (one daemon: a second one on a SQLite file is refused by design) and PostgreSQL
(``--replicas``, default 2, on a scratch database on 127.0.0.1:5432 that is dropped afterwards).

Targets: every replica serves a push ≤ 1 s after it (webhook) or ≤ interval + 1 s (poll); RSS
over 600 idle polls stays flat; each no-change poll costs ≤ 50 ms of CPU. A figure printer,
not a test.

    python bench/bench_daemon.py [--templates 1000] [--store both|sqlite|postgresql] [--replicas 2]
        [--pushes 5] [--interval 2] [--polls 600] [--skip-webhook] [--skip-poll] [--skip-idle]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleetgen

WORK = Path(__file__).resolve().parent / ".work"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
SECRET = "bench-webhook-secret"
TENANT = fleetgen.TENANT
IDLE_INTERVAL = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 180.0  # a cold apply of 10,000 versions on a busy 2-core machine
#: Not ready, and for this long the daemon and its forked parse workers (the same ones) each used
#: under 10% of a CPU: the cold apply is stuck.
STALL_SECONDS = 10.0
STARTS = 3  # attempts at a replica whose cold apply gets stuck

#: (part, figure, value, target, verdict) rows for the summary table at the end
Row = tuple[str, str, str, str, str]


class DaemonDied(RuntimeError):
    pass


class ColdApplyStuck(DaemonDied):
    """The first apply stopped making progress with forked parse workers alive (see ``wait_ready``)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def armctl(database_url: str, home: Path, *args: str) -> str:
    env = {**os.environ, "ARM_DATABASE_URL": database_url, "ARM_STATE_DIR": str(home)}
    out = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"armctl {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout.strip()


class Remote:
    """A bare clone of the generated fleet (the origin the daemons follow) and a working clone
    whose commits are pushed to it."""

    def __init__(self, fleet: Path, root: Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        git(root, "clone", "-q", "--bare", "--branch", "main", str(fleet), str(self.bare))
        git(root, "clone", "-q", "--branch", "main", str(self.bare), str(self.work))
        self.url = self.bare.as_uri()

    def push(self) -> str:
        """Commit a 3-file change and push it; returns once ``git push`` has."""
        sha = fleetgen.change_files(self.work, count=3)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return sha


@contextlib.contextmanager
def database(store: str, scratch: Path) -> Iterator[str]:
    """A fresh, migrated database URL; a PostgreSQL one is dropped afterwards."""
    if store == "sqlite":
        url = f"sqlite:///{scratch / 'arm.db'}"
        armctl(url, scratch / "admin", "init")
        yield url
        return
    import sqlalchemy as sa

    name = f"arm_bench_daemon_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            url = f"{PG}/{name}"
            armctl(url, scratch / "admin", "init")
            yield url
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


class Daemon:
    """One ``armctl run`` on a free loopback port, its output in files under ``home``."""

    def __init__(self, home: Path, database_url: str, repo_url: str, poll: float, log_level: str, name: str) -> None:
        home.mkdir(parents=True)
        self.home = home
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "ARM_STATE_DIR": str(home / "state"),
            "ARM_DATABASE_URL": database_url,
            "ARM_WEBHOOK_SECRET": SECRET,
            "PYTHONFAULTHANDLER": "1",  # SIGABRT dumps every thread's stack to the log (``hang``)
        }
        self.args = [sys.executable, "-m", "reconciler", "--log-level", log_level, "run", "--repo", repo_url]
        self.args += ["--ref", "main", "--path", "fleet", "--port", str(self.port), "--poll-interval", f"{poll:g}"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.token = ""

    def start(self) -> Daemon:
        with open(self.home / "stdout", "wb") as out, open(self.home / "stderr", "wb") as err:
            # Its own process group, so processes it forks (parse workers) go with it when killed.
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=err, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, lines: int = 40) -> str:
        text = (self.home / "stderr").read_text(errors="replace").splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])

    def hang(self, what: str, error: type[DaemonDied] = DaemonDied) -> DaemonDied:
        """A daemon stuck at ``what``: dump the stacks of it and its children to its log, kill
        them, and return the error to raise, with the stacks that involve multiprocessing (or
        else the end of the log)."""
        assert self.proc is not None
        children: list[int] = []
        with contextlib.suppress(OSError):
            children = self.fork_children()
        # One at a time, so the dumps do not interleave; the daemon first, while it is still stuck.
        for pid in (self.proc.pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
                time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        log = (self.home / "stderr").read_text(errors="replace")
        stacks = multiprocessing_stacks(log)
        shown = stacks or self.tail(80)
        return error(f"daemon {self.name} stuck {what}; stacks dumped (SIGABRT){':' if stacks else ', log ends:'}\n{shown}")

    def fork_children(self) -> list[int]:
        """Processes the daemon forked (parse workers, with its command line), not its git commands."""
        mine = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        children: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(p) for p in (task / "children").read_text().split()]
        forked = []
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/cmdline").read_bytes() == mine:
                    forked.append(child)
        return forked

    def check_alive(self, what: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise DaemonDied(f"daemon {self.name} exited {self.proc.returncode} {what}; its log ends:\n{self.tail()}")

    # ---------------------------------------------------------------- HTTP (one kept-alive connection)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None  # the server closed an idle keep-alive connection: one retry
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def ready(self) -> bool:
        try:
            status, body = self.request("GET", "/readyz")
        except OSError:
            return False
        return status == 200 and bool(json.loads(body).get("ready"))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        started = time.perf_counter()
        # At the start of the stall window: the time, the daemon's CPU seconds, its workers' CPU seconds.
        window: tuple[float, float, dict[int, float]] = (started, 0.0, {})
        while time.perf_counter() - started < timeout:
            self.check_alive("before it was ready")
            if self.ready():
                return time.perf_counter() - started
            now = time.perf_counter()
            if now - window[0] >= STALL_SECONDS:
                with contextlib.suppress(OSError):
                    used = self.cpu_seconds()[0]
                    workers = {pid: process_cpu(pid) for pid in self.fork_children()}
                    worked = sum(cpu - window[2].get(pid, 0.0) for pid, cpu in workers.items())
                    limit = 0.1 * (now - window[0])
                    if workers and set(workers) == set(window[2]) and used - window[1] < limit and worked < limit:
                        what = (f"in its first apply: {used - window[1]:.2f} s of CPU in {now - window[0]:.0f} s, "
                                f"its {len(workers)} forked workers alive and idle")  # fmt: skip
                        raise self.hang(what, ColdApplyStuck)
                    window = (now, used, workers)
            time.sleep(0.1)
        raise self.hang(f"not ready after {timeout:.0f} s")

    def served(self) -> str | None:
        """The policy revision a decision of this replica names."""
        body = json.dumps({"instance": f"{TENANT}:bench-unknown-instance", "tool": "crm-read", "args": {}}).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        status, answer = self.request("POST", "/v1/decisions", body, headers)
        if status != 200:
            raise RuntimeError(f"decision on {self.name}: HTTP {status}: {answer[:300]!r}")
        return json.loads(answer).get("policyRevision")

    def webhook(self, sha: str) -> int:
        body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push", "Content-Type": "application/json"}
        status, answer = self.request("POST", "/v1/webhooks/git", body, headers)
        if status != 202 or not json.loads(answer).get("refresh"):
            raise RuntimeError(f"webhook on {self.name}: HTTP {status}: {answer[:300]!r}")
        return status

    def metric(self, line_start: str) -> float:
        _, body = self.request("GET", "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def outcomes(self) -> dict[str, float]:
        """``arm_reconcile_runs_total`` by outcome."""
        _, body = self.request("GET", "/metrics")
        prefix = 'arm_reconcile_runs_total{outcome="'
        found = {}
        for line in body.decode().splitlines():
            if line.startswith(prefix):
                label, _, value = line[len(prefix) :].partition('"} ')
                found[label] = float(value)
        return found

    def last_reconcile(self) -> dict[str, Any]:
        status, body = self.request("GET", "/v1/status", headers={"Authorization": f"Bearer {self.token}"})
        return dict(json.loads(body).get("daemon", {}).get("lastReconcile") or {}) if status == 200 else {}

    # ---------------------------------------------------------------- the process

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> tuple[float, float]:
        """(own utime+stime, waited-for children's cutime+cstime) in seconds."""
        return process_cpu(self.pid), process_cpu(self.pid, children=True)

    def stop(self) -> int | None:
        """SIGTERM; the exit code (None if it had to be killed after 30 s)."""
        if self._conn is not None:
            self._conn.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                print(self.hang("after SIGTERM: not exited within 30 s"))
                return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it left behind
        return self.proc.returncode


class Fleet:
    """Scratch origin, database and daemons of one part; everything goes in ``close``."""

    def __init__(self, fleet: Path, store: str, log_level: str) -> None:
        self.store = store
        self.log_level = log_level
        self.scratch = Path(tempfile.mkdtemp(prefix="arm-bench-daemon-"))
        self.daemons: list[Daemon] = []
        self.stopped: dict[str, int | None] = {}
        self.stuck: list[str] = []  # cold applies that got stuck (and were started again)
        self._stack = contextlib.ExitStack()
        try:
            self.remote = Remote(fleet, self.scratch)
            self.url = self._stack.enter_context(database(store, self.scratch))
        except BaseException:
            self.close()
            raise

    def start(self, replicas: int, poll: float) -> float:
        """Start the replicas (the first one leads: its cold apply runs before the others start,
        so a follower finds a commit applied at its first poll); seconds to the leader's readiness."""
        cold, token = 0.0, ""
        for number in range(1, replicas + 1):
            for attempt in range(1, STARTS + 1):
                home = self.scratch / f"replica{number}-{attempt}"
                d = Daemon(home, self.url, self.remote.url, poll, self.log_level, name=f"replica{number}").start()
                self.daemons.append(d)
                try:
                    took = d.wait_ready()
                    break
                except ColdApplyStuck as exc:
                    self.daemons.remove(d)
                    self.stuck.append(str(exc))
                    print(f"  {exc}", flush=True)
                    if attempt == STARTS:
                        raise
                    print(f"  -> starting {d.name} again", flush=True)
            if number == 1:
                cold = took
                token = armctl(self.url, self.scratch / "admin", "token", "create", "--name", "bench", "--kind", "runtime",
                               "--tenant", TENANT)  # fmt: skip
            d.token = token
        leaders = [d.name for d in self.daemons if d.metric("arm_leader") == 1]
        if leaders != [self.daemons[0].name]:
            print(f"  note: leaders are {leaders}, expected {self.daemons[0].name}")
        return cold

    def close(self) -> None:
        try:
            for d in self.daemons:
                self.stopped[d.name] = d.stop()
        finally:
            try:
                self._stack.close()
            finally:
                shutil.rmtree(self.scratch, ignore_errors=True)


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of ``pid`` (utime+stime), or of its waited-for children (cutime+cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


def multiprocessing_stacks(log: str) -> str:
    """From faulthandler dumps in ``log``: each thread whose stack involves multiprocessing, its
    innermost frames and the reconciler frame that led there."""
    shown: list[str] = []
    block: list[str] = []
    for line in [*log.splitlines(), ""]:
        if line.startswith(("Thread 0x", "Current thread 0x")) or not line.strip():
            frames = [f.strip() for f in block[1:] if f.strip().startswith("File ")]
            if frames and any("multiprocessing" in f for f in frames):
                ours = [f for f in frames if "/reconciler/" in f][:2]
                shown += [f"    {block[0].strip()}", *(f"      {f}" for f in frames[:7]), *(f"      ... {f}" for f in ours)]
            block = [line] if line.strip() else []
        elif block:
            block.append(line)
    return "\n".join(shown)


# ---------------------------------------------------------------- push -> served


def wait_served(daemons: list[Daemon], sha: str, started: float, timeout: float) -> dict[str, tuple[float, float]]:
    """For each replica: seconds from ``started`` until a decision of it named ``sha``, and how
    long that decision itself took. One thread per replica: a slow answer from one replica does
    not delay noticing another."""
    took: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def watch(d: Daemon) -> None:
        try:
            while not stop.is_set():
                asked = time.perf_counter()
                if d.served() == sha:
                    answered = time.perf_counter()
                    took[d.name] = (answered - started, answered - asked)
                    return
                d.check_alive(f"waiting for {sha[:12]} to be served")
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=watch, args=(d,), daemon=True) for d in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, timeout - (time.perf_counter() - started)))
    stop.set()
    for t in threads:
        t.join(15)
    if errors:
        raise errors[0]
    if len(took) < len(daemons):
        missing = [d.name for d in daemons if d.name not in took]
        raise daemons[0].hang(f"(the leader): {sha[:12]} not served by {missing} after {timeout:.0f} s")
    return dict(sorted(took.items()))


def pushes(fleet: Fleet, count: int, *, webhook: bool, interval: float, rng: random.Random) -> list[dict[str, Any]]:
    daemons = fleet.daemons
    leader = daemons[0]
    results: list[dict[str, Any]] = []
    for number in range(count):
        time.sleep(rng.uniform(0, interval) if not webhook else 0.5)
        sha = fleet.remote.push()
        started = time.perf_counter()
        via = ""
        hook_ms = 0.0
        if webhook:
            target = daemons[number % len(daemons)]
            via = target.name + (" (leader)" if target is leader else " (follower)")
            target.webhook(sha)
            hook_ms = (time.perf_counter() - started) * 1000
        took = wait_served(daemons, sha, started, timeout=30.0 + (0 if webhook else 2 * interval))
        last = leader.last_reconcile()
        reconcile_s = float(last.get("seconds") or 0.0)
        everyone = max(seconds for seconds, _ in took.values())
        results.append({"sha": sha, "all": everyone, "reconcile_s": reconcile_s, "decision_s": [d for _, d in took.values()]})
        per = ", ".join(
            f"{name} {seconds * 1000:.0f} ms (that decision {d * 1000:.0f} ms)" for name, (seconds, d) in took.items()
        )
        extra = f"webhook to {via} answered in {hook_ms:.0f} ms; " if webhook else ""
        print(
            f"    push {number + 1}: {sha[:12]} served by all in {everyone * 1000:.0f} ms: {per}; {extra}"
            f"leader's reconcile (fetch+apply) {reconcile_s * 1000:.0f} ms, {last.get('outcome')}",
            flush=True,
        )
    return results


def latency_part(fleet_repo: Path, store: str, replicas: int, args: argparse.Namespace, *, webhook: bool) -> list[Row]:
    part = f"{'webhook' if webhook else 'poll'} {store}"
    poll = 600.0 if webhook else args.interval
    target = 1.0 if webhook else args.interval + 1.0
    print(f"\n{part}: {replicas} replica(s), --poll-interval {poll:g}, {args.pushes} pushes", flush=True)
    fleet = Fleet(fleet_repo, store, args.log_level)
    rows: list[Row] = []
    try:
        cold = fleet.start(replicas, poll)
        print(f"  leader ready (cold apply of the fleet) in {cold:.1f} s; all {replicas} ready", flush=True)
        results = pushes(fleet, args.pushes, webhook=webhook, interval=args.interval, rng=random.Random(args.seed))
    finally:
        fleet.close()
        codes = ", ".join(f"{name} exit {code if code is not None else 'KILLED'}" for name, code in fleet.stopped.items())
        print(f"  SIGTERM: {codes}")
    rows.append((part, "leader ready after start (its cold apply)", f"{cold:.1f} s", "", ""))
    alls = [r["all"] for r in results]
    med, worst = statistics.median(alls), max(alls)
    each = " ".join(f"{s * 1000:.0f}" for s in alls)
    rows.append((part, f"push -> served by all {replicas} (ms: {each})", f"median {med * 1000:.0f} ms, max {worst * 1000:.0f} ms",
                 f"<= {target * 1000:.0f} ms", "ok" if worst <= target else "MISSED"))  # fmt: skip
    recs = [r["reconcile_s"] for r in results]
    rows.append((part, "  of which: leader's reconcile (fetch+apply)", f"median {statistics.median(recs) * 1000:.0f} ms, "
                 f"max {max(recs) * 1000:.0f} ms", "", ""))  # fmt: skip
    firsts = [d for r in results for d in r["decision_s"]]
    rows.append((part, "  of which: first decision naming it (its latency)", f"median {statistics.median(firsts) * 1000:.0f} ms, "
                 f"max {max(firsts) * 1000:.0f} ms", "", ""))  # fmt: skip
    rows.append((part, "daemons exit 0 on SIGTERM", str(list(fleet.stopped.values())), "all 0",
                 "ok" if all(code == 0 for code in fleet.stopped.values()) else "NO"))  # fmt: skip
    rows.append(stuck_row(part, fleet))
    return rows


def stuck_row(part: str, fleet: Fleet) -> Row:
    return (part, "cold applies stuck (daemon started again)", str(len(fleet.stuck)), "0", "ok" if not fleet.stuck else "BUG")


# ---------------------------------------------------------------- idle


def idle_part(fleet_repo: Path, store: str, args: argparse.Namespace) -> list[Row]:
    part = f"idle {store}"
    print(f"\n{part}: 1 daemon polling every {IDLE_INTERVAL:g} s, {args.polls} polls of an unchanged fleet", flush=True)
    fleet = Fleet(fleet_repo, store, args.log_level)
    samples: list[tuple[float, float, float, float, float]] = []  # polls, wall, rss, own cpu, children cpu
    try:
        fleet.start(1, IDLE_INTERVAL)
        d = fleet.daemons[0]

        def polls() -> float:
            return d.metric('arm_reconcile_runs_total{outcome="UNCHANGED"}')

        def sample() -> None:
            own, children = d.cpu_seconds()
            samples.append((polls(), time.perf_counter(), d.rss_mb(), own, children))
            n, _, rss, own, children = samples[-1]
            line = f"    polls {n - samples[0][0]:5.0f}  RSS {rss:6.1f} MB  CPU own {own:7.2f} s  children {children:7.2f} s"
            if len(samples) > 1:
                p, w, _, o, c = samples[-2]
                line += f"  | since last: {(own - o) / max(1, n - p) * 1000:5.1f} + {(children - c) / max(1, n - p) * 1000:5.1f} ms/poll"
                line += f" over {time.perf_counter() - w:5.1f} s"
            print(line, flush=True)

        def wait_polls(count: float, what: str) -> None:
            """Until ``count`` polls; asking /metrics rarely (each request costs the daemon CPU too)."""
            started, left = time.perf_counter(), count - polls()
            timeout = left * IDLE_INTERVAL * 3 + 60
            while left > 0:
                d.check_alive(f"waiting for {what}")
                if time.perf_counter() - started > timeout:
                    raise d.hang(f"waiting for {what} ({timeout:.0f} s)")
                time.sleep(max(1.0, 0.9 * left * IDLE_INTERVAL))
                left = count - polls()

        wait_polls(5, "5 warm-up polls")
        before = d.outcomes()
        sample()
        start = samples[0][0]
        for milestone in [*range(100, args.polls, 100), args.polls]:
            wait_polls(start + milestone, f"{milestone} polls")
            sample()
        after = d.outcomes()
    finally:
        fleet.close()
        codes = ", ".join(f"{name} exit {code if code is not None else 'KILLED'}" for name, code in fleet.stopped.items())
        print(f"  SIGTERM: {codes}")
    (p0, w0, r0, o0, c0), (p1, w1, r1, o1, c1) = samples[0], samples[-1]
    n = p1 - p0
    own_ms, child_ms = (o1 - o0) / n * 1000, (c1 - c0) / n * 1000
    rss_max = max(s[2] for s in samples)
    half = samples[len(samples) // 2]
    flat = r1 - r0 <= max(5.0, 0.02 * r0)
    others = {k: v - before.get(k, 0) for k, v in after.items() if k != "UNCHANGED" and v - before.get(k, 0)}
    return [
        (part, f"RSS over {n:.0f} polls (MB): start / end / max", f"{r0:.1f} / {r1:.1f} / {rss_max:.1f}",
         "flat (end <= start + max(5 MB, 2%))", "ok" if flat else "GREW"),
        (part, "RSS growth over the second half", f"{r1 - half[2]:+.1f} MB", "<= +1%",
         "ok" if r1 - half[2] <= 0.01 * r0 else "GREW"),
        (part, "other reconciles in the window (CPU counted above)", ", ".join(f"{k} {v:.0f}" for k, v in others.items()) or "none",
         "", ""),
        (part, "CPU per no-change poll: daemon + git children", f"{own_ms:.1f} + {child_ms:.1f} = {own_ms + child_ms:.1f} ms",
         "<= 50 ms", "ok" if own_ms + child_ms <= 50 else "MISSED"),
        (part, "polls per wall second", f"{n / (w1 - w0):.2f}", f"{1 / IDLE_INTERVAL:.2f}", ""),
        (part, "daemon exit 0 on SIGTERM", str(list(fleet.stopped.values())), "0",
         "ok" if all(code == 0 for code in fleet.stopped.values()) else "NO"),
        stuck_row(part, fleet),
    ]  # fmt: skip


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=1000, help="fleet size: templates x 10 versions")
    parser.add_argument("--store", choices=["both", "sqlite", "postgresql"], default="both",
                        help="webhook and poll parts: these stores; idle: SQLite unless one store is given")  # fmt: skip
    parser.add_argument("--replicas", type=int, default=2, help="daemons on PostgreSQL (SQLite: always 1)")
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--interval", type=float, default=2.0, help="poll interval of the poll part (s)")
    parser.add_argument("--polls", type=int, default=600, help="polls of the idle part (1 s apart)")
    parser.add_argument("--seed", type=int, default=1, help="for the push phases of the poll part")
    parser.add_argument(
        "--log-level", choices=["info", "warning"], default="info", help="of the daemons (logs in the scratch dir)"
    )
    parser.add_argument("--skip-webhook", action="store_true")
    parser.add_argument("--skip-poll", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    fleet_repo = fleetgen.cached(WORK, args.templates)
    print(f"fleet: {args.templates * 10} versions ({fleet_repo}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    try:
        for store in stores:
            replicas = 1 if store == "sqlite" else args.replicas
            if not args.skip_webhook:
                rows += latency_part(fleet_repo, store, replicas, args, webhook=True)
            if not args.skip_poll:
                rows += latency_part(fleet_repo, store, replicas, args, webhook=False)
        if not args.skip_idle:
            rows += idle_part(fleet_repo, "sqlite" if args.store == "both" else args.store, args)
    except DaemonDied as exc:
        print(f"\nFAILED: {exc}")
        raise SystemExit(1) from None
    finally:
        if rows:
            print(f"\nsummary ({args.templates * 10} versions; load now {os.getloadavg()[0]:.2f})")
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for row in rows:
                print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])


if __name__ == "__main__":
    main()
