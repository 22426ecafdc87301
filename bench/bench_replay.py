"""Benchmark: replaying recorded decisions against a head commit (``armctl replay``, ``--replay``).

On the 10,000-version bench fleet (``fleetgen.cached(WORK, 1000)``) applied to a fresh SQLite
store, it records ``--distinct`` real decisions through the decider (instances of every
deployment calling tools of the catalog with a few argument variants: what runtimes do), then
copies them until the store holds ``--decisions`` recorded decisions (the same calls made again
and again, as traffic is). A head commit on top edits a project envelope (it denies a tool), so
some decisions flip. Then, each in a child process pinned to one core, with its peak RSS:

1. ``db``: the replay from the database (``decisions.replaying.from_database`` streamed into
   ``policy.replays.Replayer``) over every recorded decision: decisions/s;
2. ``file``: ``armctl events export``'s writer to a gzipped JSON Lines file, then the replay of
   that file (what a pull request's CI runs): decisions/s and the export's time;
3. the floor measured in the same child: reading and decoding the rows alone (no evaluation).

Targets: ≥ 50,000 decisions/s on one core; 1 million replayed in ≤ 30 s with peak RSS ≤ 500 MB.
A figure printer, not a test.

    python bench/bench_replay.py [--decisions 1000000] [--distinct 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fleetgen
import yaml

WORK = Path(__file__).resolve().parent / ".work"
TARGET_RATE = 50_000
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 500.0


def head_commit(repo: Path) -> str:
    """Commit on top: the support project's envelope denies ``kb-search`` (some recorded calls flip)."""
    path = repo / "fleet/envelopes/projects/support.yaml"
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    document["spec"].setdefault("tools", {})["deny"] = ["kb-search"]
    path.write_text(fleetgen.dump_documents([document]), encoding="utf-8")
    return fleetgen._commit(repo, "bench: support may not search the knowledge base")


def record(state: Path, repo: Path, base: str, distinct: int, total: int) -> dict[str, Any]:
    """Apply ``base``, make ``distinct`` real decisions, copy them up to ``total`` rows."""
    from reconciler.decisions import deciding
    from reconciler.desired import caching, repository
    from reconciler.reconcile import running
    from reconciler.state import database

    url = f"sqlite:///{state / 'arm.db'}"
    engine = database.connect(url)
    database.migrate(engine)
    started = time.perf_counter()
    running.Reconciler(engine, repository.Repository(repo), "fleet", cache=caching.ParseCache(), workers=2).apply(base)
    applied = time.perf_counter() - started
    with engine.connect() as connection:
        instances = [r[0] for r in connection.exec_driver_sql("SELECT id FROM instances WHERE state != 'RETIRED' ORDER BY id")]
    tools = [f"{domain}-{action}" for domain in fleetgen.TOOL_DOMAINS for action in fleetgen.TOOL_ACTIONS]
    decider = deciding.Decider(engine)
    started = time.perf_counter()
    for n in range(distinct):
        instance = instances[(n * 7) % len(instances)]
        tool = tools[(n * 13) % len(tools)]
        decider.decide(deciding.Request(instance, tool, {"query": f"q{n % 5}"}, 0.01))
    decided = time.perf_counter() - started
    raw = engine.raw_connection()
    cursor = raw.cursor()
    rows = cursor.execute("SELECT tenant, at, instance, payload, call_key FROM op_events WHERE type = 'DECISION'").fetchall()
    started = time.perf_counter()
    made = len(rows)
    cursor.execute("BEGIN")
    while made < total:
        batch = rows[: min(len(rows), total - made)]
        cursor.executemany(
            "INSERT INTO op_events (tenant, at, type, instance, payload, call_key) VALUES (?, ?, 'DECISION', ?, ?, ?)", batch
        )
        made += len(batch)
    cursor.execute("COMMIT")
    raw.close()
    engine.dispose()
    return {"apply_s": applied, "distinct": len(rows), "decide_s": decided, "copy_s": time.perf_counter() - started}


def child(mode: str, state: Path, repo: Path, head: str) -> None:
    """One measurement on one core; prints a JSON line of figures."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    import orjson

    from reconciler.decisions import replaying
    from reconciler.desired import caching, repository
    from reconciler.policy import replays
    from reconciler.reconcile import impacting, running
    from reconciler.state import database

    engine = database.connect(f"sqlite:///{state / 'arm.db'}")
    reconciler = running.Reconciler(
        engine, repository.Repository(repo), "fleet", cache=caching.ParseCache(state / "cache"), workers=2
    )
    started = time.perf_counter()
    side = impacting.side_of_snapshot(reconciler.validated(head))
    side.engine()
    figures: dict[str, Any] = {"head_s": time.perf_counter() - started}
    if mode == "floor":
        started, n = time.perf_counter(), 0
        with database.reading(engine) as connection:
            for row in replaying.from_database(connection):
                orjson.loads(row[4])
                n += 1
        figures |= {"decisions": n, "seconds": time.perf_counter() - started}
    elif mode == "db":
        started = time.perf_counter()
        with database.reading(engine) as connection:
            result = replays.Replayer(side).feed(replaying.from_database(connection)).as_dict()
        figures |= {"seconds": time.perf_counter() - started, "decisions": result["replayed"], "result": _short(result)}
    else:
        out = state / "decisions.jsonl.gz"
        started = time.perf_counter()
        with database.reading(engine) as connection:
            exported = replaying.export(connection, out)
        figures["export_s"] = time.perf_counter() - started
        figures["file_mb"] = out.stat().st_size / 1e6
        started = time.perf_counter()
        result = replays.Replayer(side).feed(replaying.from_file(str(out))).as_dict()
        figures |= {"seconds": time.perf_counter() - started, "decisions": result["replayed"], "exported": exported}
        figures["result"] = _short(result)
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def _short(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "replayed": result["replayed"],
        "unreplayable": result["unreplayable"],
        "changed": result["changed"],
        "evaluated": result["evaluated"],
        "flips": [(f["tool"], f["from"], f["to"], f["count"]) for f in result["flips"]][:5],
    }


def run_child(mode: str, state: Path, repo: Path, head: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", mode, "--state", str(state), "--repo", str(repo), "--head", head]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"the {mode} child failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=3000)
    parser.add_argument("--child", choices=["db", "file", "floor"], default=None)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--head")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.state, args.repo, args.head)
        return
    state = Path(tempfile.mkdtemp(prefix="arm-replay-"))
    try:
        repo = state / "fleet"
        subprocess.run(["git", "clone", "-q", str(fleetgen.cached(WORK, 1000)), str(repo)], check=True)
        base = fleetgen._git(repo, "rev-parse", "HEAD")
        head = head_commit(repo)
        made = record(state, repo, base, args.distinct, args.decisions)
        print(
            f"bench fleet applied in {made['apply_s']:.1f} s; {made['distinct']} real decisions in {made['decide_s']:.1f} s, "
            f"copied to {args.decisions:,} recorded decisions in {made['copy_s']:.1f} s",
            flush=True,
        )
        floor = run_child("floor", state, repo, head)
        db = run_child("db", state, repo, head)
        file = run_child("file", state, repo, head)
        rate = db["decisions"] / db["seconds"]
        print(f"\nhead side (validate the head commit, envelopes, engine): {db['head_s']:.2f} s")
        print(f"floor: read + decode {floor['decisions']:,} rows from SQLite: {floor['decisions'] / floor['seconds']:,.0f}/s")
        print(
            f"db:    replayed {db['decisions']:,} in {db['seconds']:.2f} s = {rate:,.0f} decisions/s on one core; "
            f"peak RSS {db['rss_mb']:.0f} MB; {db['result']}"
        )
        print(
            f"file:  export {file['exported']:,} to {file['file_mb']:.1f} MB in {file['export_s']:.2f} s; replayed in "
            f"{file['seconds']:.2f} s = {file['decisions'] / file['seconds']:,.0f} decisions/s; peak RSS {file['rss_mb']:.0f} MB"
        )
        verdicts = [
            ("≥ 50,000 decisions/s on one core (db)", rate >= TARGET_RATE),
            (f"{args.decisions:,} in ≤ 30 s (db)", db["seconds"] <= TARGET_SECONDS),
            (f"{args.decisions:,} in ≤ 30 s (file)", file["seconds"] <= TARGET_SECONDS),
            ("peak RSS ≤ 500 MB", max(db["rss_mb"], file["rss_mb"]) <= TARGET_RSS_MB),
        ]
        print()
        for what, ok in verdicts:
            print(f"{'PASS' if ok else 'FAIL'}  {what}")
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
