"""Benchmark: ``armctl validate`` on a generated 10,000-version fleet, cold, warm and after a change.

Generates (once, cached under ``bench/.work``) a fleet of 1,000 templates × 10 versions with
envelopes and 1,000 deployments (``fleetgen``), then runs the real CLI as a user would:

- cold: empty state directory (no parse cache), first read of the commit;
- warm: the same commit again (parse cache on disk);
- change: a new commit touching 3 files, validated with the warm cache.

Prints wall time and peak RSS of each run against the issue's targets (cold ≤ 3 s, warm ≤ 0.5 s,
3-file change ≤ 0.5 s, peak RSS ≤ 400 MB). A figure printer, not a test.

    python bench/bench_validate.py [--templates 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleetgen

WORK = Path(__file__).resolve().parent / ".work"


def fleet_repo(templates: int) -> Path:
    return fleetgen.cached(WORK, templates)


def run_validate(repo: Path, state: Path, ref: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of one ``armctl validate`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "--state-dir", str(state), "validate", "--repo", str(repo), "--ref", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
    # ru_maxrss of children is the max over all children so far: report the max seen.
    return elapsed, max(peak, before) / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    repo = fleet_repo(args.templates)
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", "main"], check=True)
    base = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True, check=True
    ).stdout.strip()
    results: dict[str, list[float]] = {"cold": [], "warm": [], "change3": []}
    peak_mb = 0.0
    for _ in range(args.runs):
        subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-B", "bench", base], check=True)
        state = WORK / "state"
        shutil.rmtree(state, ignore_errors=True)
        for label in ("cold", "warm"):
            seconds, mb, code = run_validate(repo, state, base)
            assert code == 0, f"{label} validate failed"
            results[label].append(seconds)
            peak_mb = max(peak_mb, mb)
        changed = fleetgen.change_files(repo, count=3)
        seconds, mb, code = run_validate(repo, state, changed)
        assert code == 0, "validate after the 3-file change failed"
        results["change3"].append(seconds)
        peak_mb = max(peak_mb, mb)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)
    targets = {"cold": 3.0, "warm": 0.5, "change3": 0.5}
    print(f"armctl validate, {args.templates * 10} versions, {args.templates} templates, {os.cpu_count()} cores")
    for label, values in results.items():
        best, median = min(values), statistics.median(values)
        verdict = "ok" if median <= targets[label] else "OVER"
        print(f"  {label:8} median {median:6.3f} s  best {best:6.3f} s  target <= {targets[label]} s  {verdict}")
    print(f"  peak RSS {peak_mb:6.1f} MB  target <= 400 MB  {'ok' if peak_mb <= 400 else 'OVER'}")


if __name__ == "__main__":
    main()
