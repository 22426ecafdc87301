"""Benchmark: plan+apply inside one long-lived process, as the daemon runs it.

``bench_reconcile.py`` times the CLI, whose every run pays ~0.5 s of interpreter start-up and
imports. The daemon pays that once; this script measures what it pays per reconcile, through the
library (``reconcile.running.Reconciler``) with one engine, parse cache and connection pool:

- cold: first apply of the generated fleet into an empty database (per-phase times);
- re-apply: the same commit again (compares SHAs and stops);
- change3: a commit touching 3 files, applied on top.

Targets (10,000 versions): cold ≤ 5 s, re-apply ≤ 50 ms, 3-file change ≤ 300 ms, RSS ≤ 500 MB.

With ``--suites N`` the fleet carries N EvaluationSuites per template (``fleetgen``) and no
``spec.evaluations``; before the cold apply is timed, the database is given a passing run of
every suite for every version (what CI would have recorded: N runs per version, through
``evidence.recording.import_runs``), so the gates judge recorded runs and the plan takes the same
steps as a fleet without suites. Compare ``--suites 3`` with the build before evidence gates,
run with ``--suites 0``, in the same session.

    python bench/bench_reconcile_inprocess.py [--versions 10000] [--store sqlite|postgresql] [--runs 3] [--suites 3]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fleetgen
import sqlalchemy as sa

from reconciler.desired import caching, repository
from reconciler.reconcile import running
from reconciler.state import database

WORK = Path(__file__).resolve().parent / ".work"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def fleet(versions: int, suites: int = 0) -> tuple[Path, str, str]:
    repo = fleetgen.cached(WORK, versions // 10, suites)
    git = ["git", "-C", str(repo)]
    base = subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "checkout", "-q", "-B", "bench-inprocess", base], check=True)
    changed = fleetgen.change_files(repo, count=3)
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    return repo, base, changed


def recorded_runs(repo: Path, base: str, suites: int) -> list[dict[str, Any]]:
    """A passing run of each of its suites for every version of ``base``, as GET /v1/evaluations lists them."""
    from reconciler.reconcile import validating

    snap = validating.validate(repository.Repository(repo), base, "fleet", cache=caching.ParseCache())
    passing = fleetgen.passing_runs(suites)
    by_project: dict[str, list[tuple[str, dict[str, float], int]]] = {}
    for suite, (project, metrics, samples) in passing.items():
        by_project.setdefault(project, []).append((suite, metrics, samples))
    runs: list[dict[str, Any]] = []
    at = "2026-01-01T00:00:00+00:00"
    for obj in snap.of_kind("AgentVersion"):
        template = snap.get("AgentTemplate", obj.tenant, obj.doc.template or "")
        project = template.doc.facts["labels"]["project"] if template is not None else ""
        for suite, metrics, samples in by_project.get(project, []):
            runs.append(
                {"id": len(runs) + 1, "tenant": obj.tenant, "version": obj.name, "template": obj.doc.template,
                 "genomeHash": snap.genome_hashes[(obj.tenant, obj.name)], "suite": suite,
                 "category": suite.split("-")[1], "metrics": metrics, "samples": samples, "submitter": "ci token bench",
                 "verdict": "passing", "at": at}
            )  # fmt: skip
    return runs


def one_run(store: str, repo: Path, base: str, changed: str, runs: list[dict[str, Any]]) -> dict[str, float]:
    scratch = Path(tempfile.mkdtemp(prefix="arm-bench-"))
    name = f"arm_bench_{uuid.uuid4().hex[:8]}"
    if store == "postgresql":
        admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = f"{PG}/{name}"
    else:
        url = f"sqlite:///{scratch / 'arm.db'}"
    try:
        engine = database.connect(url)
        database.migrate(engine)
        if runs:
            from reconciler.evidence import recording

            with database.transaction(engine) as connection:
                recording.import_runs(connection, runs, "bench")
        rec = running.Reconciler(engine, repository.Repository(repo), "fleet", cache=caching.ParseCache(), workers=2)
        started = time.perf_counter()
        cold = rec.apply(base)
        figures = {"cold_s": time.perf_counter() - started, "records": cold.records}
        figures |= {f"cold_{k}_s": v for k, v in cold.timings.items()}
        started = time.perf_counter()
        again = rec.apply(base)
        figures["reapply_ms"] = (time.perf_counter() - started) * 1000
        assert again.outcome == "UNCHANGED", again.outcome
        started = time.perf_counter()
        change = rec.apply(changed)
        figures["change3_ms"] = (time.perf_counter() - started) * 1000
        figures |= {f"change3_{k}_ms": v * 1000 for k, v in change.timings.items()}
        figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        engine.dispose()
        return figures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if store == "postgresql":
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--suites", type=int, default=0, help="EvaluationSuites per template, each with a recorded passing run")
    args = parser.parse_args()
    repo, base, changed = fleet(args.versions, args.suites)
    evidence = recorded_runs(repo, base, args.suites) if args.suites else []
    runs = []
    for _ in range(args.runs):
        # A fresh process per run would be fairer for RSS; runs in one process share the peak.
        runs.append(one_run(args.store, repo, base, changed, evidence))
    keys = runs[0].keys()
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(
        f"in-process reconcile, {args.store}, {args.versions} versions, {args.suites} suites per template "
        f"({len(evidence)} recorded runs), {args.runs} run(s), medians"
    )
    print(
        f"  cold      {med['cold_s']:.2f} s  ({int(med['records'])} records; "
        + ", ".join(f"{k[5:-2]} {med[k]:.2f} s" for k in keys if k.startswith("cold_") and k != "cold_s")
        + ")  target <= 5 s"
    )
    print(f"  re-apply  {med['reapply_ms']:.1f} ms  target <= 50 ms")
    print(
        f"  change3   {med['change3_ms']:.0f} ms  ("
        + ", ".join(f"{k[8:-3]} {med[k]:.0f} ms" for k in keys if k.startswith("change3_") and k != "change3_ms")
        + ")  target <= 300 ms"
    )
    print(f"  peak RSS  {med['rss_mb']:.0f} MB  target <= 500 MB")


if __name__ == "__main__":
    main()
