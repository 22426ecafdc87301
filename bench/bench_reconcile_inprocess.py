"""Benchmark: plan+apply inside one long-lived process, as the daemon runs it.

``bench_reconcile.py`` times the CLI, whose every run pays ~0.5 s of interpreter start-up and
imports. The daemon pays that once; this script measures what it pays per reconcile, through the
library (``reconcile.running.Reconciler``) with one engine, parse cache and connection pool:

- cold: first apply of the generated fleet into an empty database (per-phase times);
- re-apply: the same commit again (compares SHAs and stops);
- change3: a commit touching 3 files, applied on top.

Targets (10,000 versions): cold ≤ 5 s, re-apply ≤ 50 ms, 3-file change ≤ 300 ms, RSS ≤ 500 MB.

    python bench/bench_reconcile_inprocess.py [--versions 10000] [--store sqlite|postgresql] [--runs 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fleetgen
import sqlalchemy as sa

from reconciler.desired import caching, repository
from reconciler.reconcile import running
from reconciler.state import database

WORK = Path(__file__).resolve().parent / ".work"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def fleet(versions: int) -> tuple[Path, str, str]:
    repo = fleetgen.cached(WORK, versions // 10)
    git = ["git", "-C", str(repo)]
    base = subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "checkout", "-q", "-B", "bench-inprocess", base], check=True)
    changed = fleetgen.change_files(repo, count=3)
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    return repo, base, changed


def one_run(store: str, repo: Path, base: str, changed: str) -> dict[str, float]:
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
    args = parser.parse_args()
    repo, base, changed = fleet(args.versions)
    runs = []
    for _ in range(args.runs):
        # A fresh process per run would be fairer for RSS; runs in one process share the peak.
        runs.append(one_run(args.store, repo, base, changed))
    keys = runs[0].keys()
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(f"in-process reconcile, {args.store}, {args.versions} versions, {args.runs} run(s), medians")
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
