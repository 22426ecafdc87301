"""Benchmark: a pull request's plan with its decision impact on the 10,000-version bench fleet.

``armctl plan --base BASE --head HEAD --format json`` as CI runs it (a process: start-up,
imports, the scratch database, the base applied to it, the head planned against it, the Rego
unit tests, and the decision impact of every version deployed or deployable × every tool × every
risk level, base against head), for three pull requests on top of the generated fleet
(``fleetgen.cached(WORK, 1000)``):

- ``envelope``: a project's envelope denies one more tool;
- ``catalog``: a tool's catalog risk goes from GREEN to YELLOW;
- ``rego``: a fleet Rego module that denies a tool in production (every probe is asked again:
  the policy itself changed).

For each it prints the wall time, the same plan with ``--no-impact`` (what the impact adds), the
process's peak RSS, and the impact's figures (versions, probes, inputs evaluated, flips). The
parse cache is warm after the first plan (as a CI cache of the state directory keeps it).
Target: ≤ 15 s for a PR plan with impact. A figure printer, not a test.

    python bench/bench_impact.py [--runs 1] [--before TREE]
"""

from __future__ import annotations

import argparse
import json
import os
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
import yaml

_HERE = Path(__file__).resolve().parent
WORK = _HERE / ".work"
TARGET_SECONDS = 15.0

REGO = """package arm.ext.bench

import rego.v1

deny contains "deploy-update is not an agent's call in production" if {
\tinput.environment.production == true
\tinput.tool.name == "deploy-update"
}
"""


def _edit_yaml(path: Path, change: Any) -> None:
    documents = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader))
    for document in documents:
        change(document)
    path.write_text(fleetgen.dump_documents(documents), encoding="utf-8")


def pull_requests(repo: Path, base: str) -> dict[str, str]:
    """Three branches on top of ``base``, one change each; name → head SHA."""
    heads = {}

    def deny(document: dict[str, Any]) -> None:
        document["spec"].setdefault("tools", {})["deny"] = ["kb-search"]

    def raise_risk(document: dict[str, Any]) -> None:
        for tool in document["spec"]["tools"]:
            if tool["name"] == "crm-read":
                tool["risk"] = "YELLOW"

    changes = {
        "envelope": lambda: _edit_yaml(repo / "fleet/envelopes/projects/support.yaml", deny),
        "catalog": lambda: _edit_yaml(repo / "fleet/tools/catalog.yaml", raise_risk),
        "rego": lambda: (repo / "fleet/policies").mkdir(exist_ok=True) or (repo / "fleet/policies/bench.rego").write_text(REGO),
    }
    for name, change in changes.items():
        fleetgen._git(repo, "checkout", "-q", "-B", f"pr-{name}", base)
        change()
        heads[name] = fleetgen._commit(repo, f"bench PR: {name}")
    fleetgen._git(repo, "checkout", "-q", base)
    return heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--before",
        metavar="TREE",
        help="also plan with this source tree's code (e.g. 'git archive' of the commit before a change), each PR "
        "right before this tree's plan of it, with its own warm parse cache: before and after, same machine, same run",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="arm-impact-"))
    try:
        repo = scratch / "fleet"
        subprocess.run(["git", "clone", "-q", str(fleetgen.cached(WORK, 1000)), str(repo)], check=True)
        base = fleetgen._git(repo, "rev-parse", "HEAD")
        heads = pull_requests(repo, base)
        builds = [("before", Path(args.before).resolve()), ("after", None)] if args.before else [("", None)]
        for label, tree in builds:  # warms each build's parse cache, as a CI cache would
            _measured(scratch / f"state{label}", repo, base, base, "--no-impact", tree=tree)
        print(
            f"{'PR':18} {'with impact':>12} {'without':>9} {'impact adds':>12} {'peak RSS':>9}  versions  probes  evaluated  flips"
        )
        verdicts = []
        for name, head in heads.items():
            for label, tree in builds:
                with_impact, without, rss = [], [], []
                report: dict[str, Any] = {}
                state = scratch / f"state{label}"
                for _ in range(args.runs):
                    seconds, _, report = _measured(state, repo, base, head, tree=tree)
                    with_impact.append(seconds)
                    rss.append(report.pop("_rss_mb"))
                    seconds, _, _ = _measured(state, repo, base, head, "--no-impact", tree=tree)
                    without.append(seconds)
                impact = report["impact"]
                w, wo = statistics.median(with_impact), statistics.median(without)
                title = f"{name} ({label})" if label else name
                print(
                    f"{title:18} {w:11.2f}s {wo:8.2f}s {w - wo:11.2f}s {max(rss):7.0f}MB  {impact['versions']:8}  "
                    f"{impact['probes']:6}  {impact['evaluated']:9}  "
                    + "; ".join(f"{f['from']}→{f['to']} {f['tool']} ×{f['count']}" for f in impact["flips"][:3])
                )
                if tree is None:
                    verdicts.append((name, w))
        print("\nThe impact alone, in process (both sides from their validated commits, then the probes, in one process and as")
        print("armctl plan asks them, on every core):")
        for name, head in heads.items():
            print(f"  {name:10} {_in_process(repo, base, head)}")
        print()
        for name, seconds in verdicts:
            print(f"{'PASS' if seconds <= TARGET_SECONDS else 'FAIL'}  {name}: PR plan with impact in ≤ {TARGET_SECONDS:.0f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _in_process(repo: Path, base: str, head: str) -> str:
    from reconciler.desired import caching, repository
    from reconciler.policy import impact
    from reconciler.reconcile import impacting, validating

    source, cache = repository.Repository(repo), caching.ParseCache()
    base_snap = validating.validate(source, base, "fleet", cache=cache, workers=2)
    head_snap = validating.validate(source, head, "fleet", cache=cache, workers=2, previous=base_snap)
    started = time.perf_counter()
    sides = impacting.side_of_snapshot(base_snap), impacting.side_of_snapshot(head_snap)
    built = time.perf_counter() - started
    started = time.perf_counter()
    report = impact.probe(*sides).as_dict()
    probed = time.perf_counter() - started
    # As armctl plan probes: the distinct inputs evaluated on every core.
    sides = impacting.side_of_snapshot(base_snap), impacting.side_of_snapshot(head_snap)
    started = time.perf_counter()
    assert impact.probe(*sides, workers=os.cpu_count() or 1).as_dict() == report
    on_every_core = time.perf_counter() - started
    # The floor, in the same run: one decision through the endpoint's path, asked again and again.
    side = sides[1]
    tenant, version = next(iter(sorted(side.deployable())))
    tool = next(iter(side.tools[tenant]))
    started = time.perf_counter()
    for _ in range(2000):
        impact.decide(side, tenant, version, "floor", "ACTIVE", "dev", False, tool, {}, 0.0, (None, None, None, None))
    floor = 2000 / (time.perf_counter() - started)
    return (
        f"sides {built:.2f} s, probes {probed:.2f} s in one process, {on_every_core:.2f} s on {os.cpu_count()} cores "
        f"({report['evaluated']:,} inputs evaluated of {report['probes']:,} probes, "
        f"{report['evaluated'] / probed:,.0f}/s in one, floor {floor:,.0f}/s; {len(report['flips'])} flip groups, "
        f"{report['widening'] + report['narrowing']:,} flips)"
    )


def _measured(
    state: Path, repo: Path, base: str, head: str, *extra: str, tree: Path | None = None
) -> tuple[float, float, dict[str, Any]]:
    env = {
        **os.environ,
        "ARM_STATE_DIR": str(state),
        "ARM_REPO": str(repo),
        "ARM_DATABASE_URL": f"sqlite:///{state / 'unused.db'}",
    }
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    argv = [sys.executable, "-m", "reconciler", "plan", "--base", base, "--head", head, "--format", "json", *extra]
    started = time.perf_counter()
    # cwd: `python -m` puts it first on the path, ahead of PYTHONPATH
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tree or _HERE.parent)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        raise SystemExit(f"plan failed ({code}): {err.decode()[-2000:]}")
    report = json.loads(out)
    report["_rss_mb"] = usage.ru_maxrss / 1024
    return seconds, 0.0, report


if __name__ == "__main__":
    main()
