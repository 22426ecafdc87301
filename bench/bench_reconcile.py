"""Benchmark: ``armctl init`` + ``armctl apply`` of generated fleets, on SQLite and PostgreSQL.

For each store (SQLite in a fresh state directory; PostgreSQL in a fresh scratch database
``arm_bench_*`` that this script creates and drops) and each fleet size (1,000 / 2,500 / 5,000 /
10,000 AgentVersions: versions/10 templates × 10 versions, one Deployment per template, built by
``fleetgen.generate`` and cached under ``bench/.work/fleet-<templates>``, shared with
``bench_validate.py``), it runs the real CLI as subprocesses, the way a user sees it (Python
start-up and imports included):

1. cold: ``armctl init`` then ``armctl apply --format json`` of the generated commit on an empty
   database and an empty parse cache; the apply alone is reported, with its ``records`` count;
2. re-apply: ``armctl apply`` of the same commit again; must report outcome ``UNCHANGED``;
3. change3: a commit touching 3 files (``fleetgen.change_files(count=3)``: a new DRAFT version of
   3 templates) applied on top; must report ``APPLIED``.

The re-apply is also measured in-process (a helper process builds one ``Reconciler`` with the
library API, calls ``apply(ref)`` twice and times the second call): that is the cost the daemon
pays per poll, without interpreter start-up. ``armctl --version`` is timed (median of 3) as the floor any
CLI call pays (interpreter + imports).

Peak RSS is per process (``os.wait4`` rusage, which includes the ``git`` children each process
waited for), the largest over every CLI process of a row.

Targets on the 10,000-version fleet: cold apply ≤ 5 s, re-apply ≤ 50 ms, 3-file change ≤ 300 ms,
peak RSS ≤ 500 MB. Prints a table (medians over ``--runs``), verdicts for the 10k rows, and how
each figure grows from the smallest to the largest size. A figure printer, not a test.

    python bench/bench_reconcile.py [--sizes 1000,10000] [--stores sqlite,postgresql] [--runs 1]
                                    [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleetgen

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
STATES = WORK / "reconcile"

SIZES = (1000, 2500, 5000, 10000)
STORES = ("sqlite", "postgresql")
TARGET_VERSIONS = 10000
TARGETS = {"cold": 5.0, "reapply_ms": 50.0, "change3_ms": 300.0, "rss_mb": 500.0}
DEFAULT_PG = os.environ.get("ARM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")


# ---------------------------------------------------------------- fleet repositories


def fleet_repo(versions: int) -> Path:
    """The generated repository for ``versions`` versions (see ``fleetgen.cached``)."""
    if versions % 10:
        raise SystemExit(f"fleet size {versions} is not a multiple of 10 (10 versions per template)")
    return fleetgen.cached(WORK, versions // 10)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


# ---------------------------------------------------------------- running the CLI


def armctl_argv() -> list[str]:
    script = Path(sys.executable).parent / "armctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler"]


def child_env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARM_")}
    if database_url:
        env["ARM_DATABASE_URL"] = database_url
    return env


@dataclasses.dataclass
class Run:
    argv: list[str]
    seconds: float
    rss_mb: float
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            return {}


def run(argv: list[str], env: dict[str, str]) -> Run:
    """Run one process; wall time from spawn to reap, peak RSS of that process (and its children)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Run(argv, elapsed, usage.ru_maxrss / 1024, proc.returncode, out.read().decode(errors="replace"),
                   err.read().decode(errors="replace"))  # fmt: skip


class StepFailed(Exception):
    pass


# ---------------------------------------------------------------- stores


class Store:
    """A fresh, empty database for one run, and its cleanup."""

    name = ""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.url: str | None = None

    def create(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)

    def drop(self, keep: bool) -> None:
        if not keep:
            shutil.rmtree(self.state, ignore_errors=True)

    def repro_setup(self) -> list[str]:
        return [f"rm -rf {shlex.quote(str(self.state))}"]


class SQLiteStore(Store):
    name = "sqlite"


class PostgresStore(Store):
    name = "postgresql"

    def __init__(self, state: Path, server: str, database: str) -> None:
        super().__init__(state)
        self.server = server.rstrip("/")
        self.database = database
        self.url = f"{self.server}/{database}"

    def _admin(self) -> Any:
        import psycopg

        conninfo = self.server.replace("postgresql+psycopg://", "postgresql://", 1) + "/postgres"
        return psycopg.connect(conninfo, autocommit=True)

    def create(self) -> None:
        super().create()
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def drop(self, keep: bool) -> None:
        super().drop(keep)
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def repro_setup(self) -> list[str]:
        admin = self.server.replace("postgresql+psycopg://", "postgresql://", 1) + "/postgres"
        return [
            *super().repro_setup(),
            f"psql {shlex.quote(admin)} -c 'DROP DATABASE IF EXISTS \"{self.database}\"' -c 'CREATE DATABASE \"{self.database}\"'",
            f"export ARM_DATABASE_URL={shlex.quote(self.url or '')}",
        ]


# ---------------------------------------------------------------- one run


@dataclasses.dataclass
class Sample:
    init: float | None = None
    cold: float | None = None
    records: int | None = None
    reapply_ms: float | None = None
    inproc_ms: float | None = None
    inproc_first_ms: float | None = None
    inproc_setup_ms: float | None = None
    change3_ms: float | None = None
    change3_records: int | None = None
    rss_mb: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    failed: str | None = None


def one_run(store: Store, repo: Path, base: str) -> Sample:
    sample = Sample()
    env = child_env(store.url)
    state = str(store.state)
    cli = [*armctl_argv(), "--state-dir", state]
    done: list[list[str]] = []  # commands run so far, for the reproduction recipe

    def step(label: str, args: list[str], expect: str | None = None) -> Run:
        argv = [*cli, *args]
        result = run(argv, env)
        done.append(argv)
        sample.rss_mb = max(sample.rss_mb, result.rss_mb)
        if result.code != 0:
            raise StepFailed(failure_report(label, store, result, done))
        if expect is not None:
            outcome = result.json().get("outcome")
            if outcome != expect:
                sample.notes.append(f"{label}: outcome {outcome!r}, expected {expect!r}")
        return result

    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-B", "bench", base], check=True)
    try:
        store.create()
    except Exception as exc:  # noqa: BLE001 - a figure printer reports and goes on to the next row
        sample.failed = f"cannot create the {store.name} store: {type(exc).__name__}: {exc}"
        return sample
    try:
        sample.init = step("init", ["init"]).seconds
        cold = step("cold apply", ["apply", "--repo", str(repo), "--ref", base, "--format", "json"], "APPLIED")
        sample.cold, sample.records = cold.seconds, cold.json().get("records")
        again = step("re-apply", ["apply", "--repo", str(repo), "--ref", base, "--format", "json"], "UNCHANGED")
        sample.reapply_ms = again.seconds * 1000
        helper = run([sys.executable, __file__, "--in-process", state, str(repo), base], env)
        if helper.code != 0:
            sample.notes.append(f"in-process re-apply failed (exit {helper.code}): {last_lines(helper.stderr, 3)}")
        else:
            report = helper.json()
            sample.inproc_ms = report["second_ms"]
            sample.inproc_first_ms = report["first_ms"]
            sample.inproc_setup_ms = report["setup_ms"]
            for key in ("first_outcome", "second_outcome"):
                if report[key] != "UNCHANGED":
                    sample.notes.append(f"in-process {key.split('_')[0]} call: outcome {report[key]!r}, expected 'UNCHANGED'")
        changed = fleetgen.change_files(repo, count=3)
        change = step("change3 apply", ["apply", "--repo", str(repo), "--ref", changed, "--format", "json"], "APPLIED")
        sample.change3_ms, sample.change3_records = change.seconds * 1000, change.json().get("records")
    except StepFailed as exc:
        sample.failed = str(exc)
    finally:
        store.drop(keep=sample.failed is not None)
    return sample


def last_lines(text: str, count: int) -> str:
    return " | ".join(text.strip().splitlines()[-count:])


def failure_report(label: str, store: Store, result: Run, done: list[list[str]]) -> str:
    lines = [
        f"{label} FAILED: exit {result.code} after {result.seconds:.2f} s ({store.name})",
        "--- stderr (last 60 lines) ---",
        *result.stderr.rstrip().splitlines()[-60:],
    ]
    if result.stdout.strip():
        lines += ["--- stdout (last 20 lines) ---", *result.stdout.rstrip().splitlines()[-20:]]
    lines += ["--- reproduce with ---", f"cd {shlex.quote(str(ROOT))} && . .venv/bin/activate", *store.repro_setup()]
    lines += [shlex.join(["armctl", *argv[len(armctl_argv()) :]]) for argv in done]
    if store.name == "sqlite":
        lines.append(f"(state directory kept: {store.state})")
    else:
        lines.append("(the scratch database was dropped; the recipe above recreates it)")
    return "\n".join(lines)


# ---------------------------------------------------------------- in-process re-apply


def in_process(state: str, repo: str, ref: str) -> None:
    """Helper process: one Reconciler via the library API, ``apply(ref)`` twice; print JSON timings."""
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    from reconciler import settings as settings_
    from reconciler.desired import caching, repository
    from reconciler.reconcile import running, validating

    imported = time.perf_counter()
    settings = settings_.Settings.from_env(state_dir=state)
    db = running.open_database(settings.database)
    source = repository.Repository(repo, cache_dir=settings.cache_dir)
    reconciler = running.Reconciler(
        db,
        source,
        settings.path,
        cache=caching.ParseCache(settings.cache_dir),
        limits=validating.limits_from(settings),
        workers=os.cpu_count() or 1,
    )
    ready = time.perf_counter()
    calls = []
    for _ in range(12):
        t0 = time.perf_counter()
        outcome = reconciler.apply(ref)
        calls.append((time.perf_counter() - t0, outcome.outcome))
    print(
        json.dumps(
            {
                "import_ms": (imported - started) * 1000,
                "setup_ms": (ready - imported) * 1000,
                "first_ms": calls[0][0] * 1000,
                "first_outcome": calls[0][1],
                "second_ms": calls[1][0] * 1000,
                "second_outcome": calls[1][1],
                "later_median_ms": statistics.median(c[0] for c in calls[2:]) * 1000,
            }
        )
    )


# ---------------------------------------------------------------- reporting


@dataclasses.dataclass
class Row:
    store: str
    versions: int
    samples: list[Sample]

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.failed is None]

    def median(self, name: str) -> float | None:
        values = [getattr(s, name) for s in self.samples if getattr(s, name) is not None]
        return statistics.median(values) if values else None

    @property
    def rss(self) -> float | None:
        values = [s.rss_mb for s in self.samples if s.rss_mb]
        return max(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a (not measured)"
    return "ok" if value <= limit else "OVER"


def print_report(rows: list[Row], floor: Run | None, runs: int) -> None:
    print()
    print(f"armctl reconcile benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}, median of {runs} run(s)")
    if floor is not None:
        print(
            f"process floor: 'armctl --version' (median of 3) {floor.seconds * 1000:.0f} ms, {floor.rss_mb:.0f} MB (interpreter + imports)"
        )
    header = (
        f"{'store':10} {'versions':>8} {'init s':>7} {'cold s':>7} {'records':>8} {'re-apply ms':>11} "
        f"{'in-proc ms':>10} {'change3 ms':>10} {'chg rec':>7} {'peak RSS MB':>11}  status"
    )
    print()
    print("cold s, re-apply ms, change3 ms: end to end, one 'armctl' process each (start-up included).")
    print("in-proc ms: second Reconciler.apply(same ref) call in one process (no start-up): the daemon's cost.")
    print(header)
    print("-" * len(header))
    for row in rows:
        status = "ok" if row.ok and len(row.ok) == len(row.samples) else "FAILED" if not row.ok else "some runs FAILED"
        if any(s.notes for s in row.samples):
            status += " (see notes)"
        records = row.median("records")
        chg = row.median("change3_records")
        print(
            f"{row.store:10} {row.versions:>8} {fmt(row.median('init'), '7.2f')} {fmt(row.median('cold'), '7.2f')} "
            f"{fmt(records, '8.0f')} {fmt(row.median('reapply_ms'), '11.0f')} {fmt(row.median('inproc_ms'), '10.1f')} "
            f"{fmt(row.median('change3_ms'), '10.0f')} {fmt(chg, '7.0f')} {fmt(row.rss, '11.0f')}  {status}"
        )
    details = [r for r in rows if r.median("inproc_first_ms") is not None]
    if details:
        print()
        print("in-process detail (ms): setup = open database + Repository + ParseCache; 1st call includes first connect")
        for row in details:
            print(
                f"  {row.store:10} {row.versions:>6}: setup {fmt(row.median('inproc_setup_ms'), '.1f')}, "
                f"1st call {fmt(row.median('inproc_first_ms'), '.1f')}, 2nd call {fmt(row.median('inproc_ms'), '.1f')}"
            )

    notes = [(row, s) for row in rows for s in row.samples if s.notes]
    if notes:
        print()
        print("notes:")
        for row, s in notes:
            for note in s.notes:
                print(f"  {row.store} {row.versions}: {note}")

    print()
    print(f"verdicts on the {TARGET_VERSIONS:,}-version fleet:")
    tens = [r for r in rows if r.versions == TARGET_VERSIONS]
    if not tens:
        print(f"  (no {TARGET_VERSIONS}-version row measured)")
    for row in tens:
        print(f"  {row.store}:")
        checks = (
            ("cold plan+apply", row.median("cold"), "s", TARGETS["cold"], ".2f"),
            ("re-apply (CLI, e2e)", row.median("reapply_ms"), "ms", TARGETS["reapply_ms"], ".0f"),
            ("re-apply (in-process)", row.median("inproc_ms"), "ms", TARGETS["reapply_ms"], ".1f"),
            ("3-file change (CLI)", row.median("change3_ms"), "ms", TARGETS["change3_ms"], ".0f"),
            ("peak RSS", row.rss, "MB", TARGETS["rss_mb"], ".0f"),
        )
        for label, value, unit, limit, spec in checks:
            target = f"<= {limit:g} {unit}"
            print(f"    {label:22} {fmt(value, '>8' + spec)} {unit:2}  target {target:10}  {verdict(value, limit)}")

    print()
    print("growth from the smallest to the largest fleet (ratio, and exponent k in cost ~ n^k):")
    for store in dict.fromkeys(r.store for r in rows):
        measured = sorted((r for r in rows if r.store == store and r.ok), key=lambda r: r.versions)
        if len(measured) < 2:
            print(f"  {store}: needs two measured sizes")
            continue
        small, large = measured[0], measured[-1]
        scale = large.versions / small.versions
        parts = []
        for label, name in (("cold", "cold"), ("records", "records"), ("re-apply", "reapply_ms"),
                            ("in-proc", "inproc_ms"), ("change3", "change3_ms")):  # fmt: skip
            a, b = small.median(name), large.median(name)
            if a and b:
                parts.append(f"{label} x{b / a:.1f} (k={math.log(b / a) / math.log(scale):.2f})")
        if small.rss and large.rss:
            parts.append(f"RSS x{large.rss / small.rss:.1f}")
        print(f"  {store} {small.versions} -> {large.versions} (x{scale:g} versions): " + ", ".join(parts))


# ---------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--in-process":
        in_process(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes in versions, comma-separated")
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite, postgresql or both")
    parser.add_argument("--runs", type=int, default=1, help="runs per size and store; medians are reported")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL server URL without a database name")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - set(STORES)
    if unknown or args.runs < 1:
        parser.error(f"unknown store(s) {sorted(unknown)}" if unknown else "--runs must be >= 1")

    floors = [run([*armctl_argv(), "--version"], child_env(None)) for _ in range(3)]
    floor = sorted(floors, key=lambda r: r.seconds)[1]  # the median of three
    rows: list[Row] = []
    for versions in sizes:
        repo = fleet_repo(versions)
        subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard"], check=True)
        subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)
        base = git(repo, "rev-parse", "main")
        try:
            for name in stores:
                row = Row(name, versions, [])
                rows.append(row)
                for number in range(args.runs):
                    state = STATES / f"{name}-{versions}-{number}"
                    store: Store
                    if name == "sqlite":
                        store = SQLiteStore(state)
                    else:
                        store = PostgresStore(state, args.pg_url, f"arm_bench_{os.getpid()}_{versions}_{number}")
                    print(f"{name} {versions} versions, run {number + 1}/{args.runs} ...", flush=True)
                    sample = one_run(store, repo, base)
                    row.samples.append(sample)
                    if sample.failed:
                        print(sample.failed, flush=True)
                    else:
                        print(
                            f"  cold {sample.cold:.2f} s ({sample.records} records), re-apply {sample.reapply_ms:.0f} ms, "
                            f"in-proc {fmt(sample.inproc_ms, '.1f')} ms, change3 {sample.change3_ms:.0f} ms, "
                            f"peak {sample.rss_mb:.0f} MB",
                            flush=True,
                        )
        finally:
            subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)
    print_report(rows, floor if floor.code == 0 else None, args.runs)


if __name__ == "__main__":
    main()
