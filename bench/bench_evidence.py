"""Evidence figures: ``armctl audit verify``'s chain check, exporting and signing an audit pack of
1 million decision events, and verifying that pack offline.

    python bench/bench_evidence.py [--records 500000] [--events 1000000] [--runs 3] [--skip-pack]

Builds (once, under ``bench/.work/evidence/``) a SQLite store holding ``--records`` change
records of one tenant (DENY records, as decisions write them) with a signed checkpoint, and
``--events`` DECISION op events (payloads as the decider stores them). Then, in one process:

- the chain check (``audit.chain.verify`` plus the checkpoints), in records/s of wall-clock time
  and of CPU time, against the implementation before it (``audit.chain.verify_generic``: every
  row decoded to text, its body put together from 13 columns) measured in the same run, in one
  process (``audit.verifying`` with one worker) and as ``armctl audit verify`` runs it (a worker
  process per core from 200,000 records), and a
  floor: the same rows read through a raw cursor and each hashed once (sha256 of its stored text);
- the export (``evidence.packing.export``: the pack of the tenant, signed) in seconds, and a
  floor: the rows read through a raw cursor and gzipped at the pack's level;
- the offline verification (``evidence.unpacking.verify_pack``) in seconds, and a floor: the
  pack gunzipped and hashed.

Targets (issue 18): the chain check ≥ 200,000 records/s, export + sign of 1 million decision
events ≤ 60 s, verifying that pack ≤ 30 s. The host is shared: each figure comes with its floor
measured in the same run; the best of ``--runs`` is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import random
import resource
import sqlite3
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.audit import chain, verifying  # noqa: E402
from reconciler.evidence import checkpoints, keys, packing, retention, unpacking  # noqa: E402
from reconciler.state import database, tables  # noqa: E402

WORK = ROOT / "bench" / ".work" / "evidence"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
TENANT = "acme"


def _build(records: int, events: int) -> tuple[Path, keys.Signer]:
    db_path = WORK / f"store-{records}-{events}.db"
    signer = keys.signer_for(WORK / "keys", None, NOW)
    assert signer is not None
    if db_path.exists():
        return db_path, signer
    WORK.mkdir(parents=True, exist_ok=True)
    partial = db_path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    engine = database.connect(f"sqlite:///{partial}")
    database.migrate(engine)
    started = time.perf_counter()
    rng = random.Random(18)
    tools = [f"tool.{i}" for i in range(40)]
    with database.transaction(engine) as connection:
        connection.execute(tables.tenants.insert().values(
            tenant=TENANT, name=TENANT, labels={}, spec={}, digest="x", status="ACTIVE", origin="", created_sha="0" * 40,
            updated_sha="0" * 40, created_at=NOW, updated_at=NOW,
        ))  # fmt: skip
        built = chain.Chain({})
        for n in range(records):
            tool = rng.choice(tools)
            built.add(
                chain.Record(
                    TENANT, "POLICY_EVALUATED", "Instance", f"{TENANT}:agent-{n % 500}",
                    after={"decision": "DENY", "tool": tool, "reasons": [f"tool {tool} is denied by the envelope"],
                           "decisionId": n + 1, "policyRevision": "a" * 40},
                ),
                NOW - dt.timedelta(seconds=records - n),
            )  # fmt: skip
            if len(built.rows) >= 20000:
                built.write(connection)
        built.write(connection)
        checkpoints.write(connection, signer, NOW)
    with database.transaction(engine) as connection:
        cursor = database.driver_cursor(connection)
        batch = []
        for n in range(events):
            tool = rng.choice(tools)
            payload = {
                "tool": tool, "args": {"invoice": f"INV-{n}", "amount": n % 500}, "decision": "ALLOW",
                "reasons": ["within the envelope"], "risk": {"level": "GREEN", "catalogLevel": "GREEN", "reasons": []},
                "callKey": hashlib.sha256(str(n).encode()).hexdigest()[:32], "runId": f"run-{n // 20}", "costEstimate": 0.01,
                "approvalId": None, "policyRevision": "a" * 40, "version": "agent@1.0.0",
            }  # fmt: skip
            at = NOW - dt.timedelta(seconds=(events - n) / 100)
            batch.append(
                (TENANT, database.bind_at(at, "sqlite"), f"{TENANT}:agent-{n % 500}", json.dumps(payload), payload["callKey"])
            )
            if len(batch) >= 50000:
                cursor.executemany(
                    "INSERT INTO op_events (tenant, at, type, instance, payload, call_key) VALUES (?, ?, 'DECISION', ?, ?, ?)",
                    batch,
                )
                batch = []
        if batch:
            cursor.executemany(
                "INSERT INTO op_events (tenant, at, type, instance, payload, call_key) VALUES (?, ?, 'DECISION', ?, ?, ?)", batch
            )
    engine.dispose()
    # Everything into the database file before it is renamed, outside any transaction (the store's
    # connections begin one at once).
    with contextlib.closing(sqlite3.connect(partial)) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    partial.rename(db_path)
    print(f"built {db_path.name}: {records} records, {events} events in {time.perf_counter() - started:.1f} s", flush=True)
    return db_path, signer


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _floor_records(db_path: Path) -> float:
    started = time.perf_counter()
    con = sqlite3.connect(db_path)
    for row in con.execute("SELECT tenant, seq, sha, author, operator, type, object_kind, object_name, before, after, at, prev_hash, hash"
                           " FROM change_records ORDER BY tenant, seq"):  # fmt: skip
        hashlib.sha256(repr(row).encode()).digest()
    con.close()
    return time.perf_counter() - started


def _floor_export(db_path: Path, scratch: Path) -> float:
    started = time.perf_counter()
    con = sqlite3.connect(db_path)
    out = zlib.compressobj(1, zlib.DEFLATED, 31)
    with scratch.open("wb") as stream:
        for row in con.execute("SELECT id, tenant, at, type, instance, payload, call_key FROM op_events ORDER BY id"):
            stream.write(out.compress(repr(row).encode() + b"\n"))
        stream.write(out.flush())
    con.close()
    return time.perf_counter() - started


def _floor_verify(pack: Path) -> float:
    started = time.perf_counter()
    inflate = zlib.decompressobj(31)
    digest = hashlib.sha256()
    with pack.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(inflate.decompress(chunk))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-pack", action="store_true", help="Measure the chain check only.")
    args = parser.parse_args()
    db_path, signer = _build(args.records, args.events)
    engine = database.connect(f"sqlite:///{db_path}")
    trusted = {signer.kid: signer.public}

    workers = len(os.sched_getaffinity(0))
    ways = {
        "before": chain.verify_generic,
        "after, one process": functools.partial(verifying.verify_sqlite, workers=1),
        f"after ({workers} processes)": chain.verify,
    }
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in ways}
    floors = []
    for _ in range(args.runs):
        floors.append(_floor_records(db_path))
        # In turn, so each sees the same host: the implementation before, then this one.
        for label, verify in ways.items():
            started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
            with database.reading(engine) as connection:
                breaks = list(verify(connection))
                cp_breaks, _ = checkpoints.verify(connection, trusted, None, NOW)
            spent = time.process_time() - cpu + _children_cpu() - children  # the workers' CPU too
            times[label].append((time.perf_counter() - started, spent))
            assert not breaks and not cp_breaks, (breaks[:3], cp_breaks[:3])
    n = args.records
    best = {label: (min(t[0] for t in runs), min(t[1] for t in runs)) for label, runs in times.items()}
    for label, (wall, cpu) in best.items():
        print(
            f"audit verify (chain + checkpoints), {label}: {n / wall:,.0f} records/s ({wall:.2f} s for {n:,}); "
            f"{n / cpu:,.0f} records per CPU-second (workers included)"
        )
    before, one, many = best.values()
    print(
        f"  after/before: {before[0] / many[0]:.2f}x wall-clock ({before[0] / one[0]:.2f}x in one process), "
        f"{before[1] / one[1]:.2f}x CPU in one process; floor (raw read + one sha256 a row) {n / min(floors):,.0f}/s, "
        f"ratio to it {min(floors) / many[0]:.2f}; host load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )

    if args.skip_pack:
        return
    pack = WORK / "pack.tar.gz"
    policy = retention.Policy(30, 180, WORK / "archive", 300.0)
    export_times, export_floors, check_times, check_floors = [], [], [], []
    for _ in range(args.runs):
        export_floors.append(_floor_export(db_path, WORK / "floor.gz"))
        started = time.perf_counter()
        with database.reading(engine) as connection:
            packing.export(connection, TENANT, None, None, pack, signer, policy, NOW, "bench")
        export_times.append(time.perf_counter() - started)
        check_floors.append(_floor_verify(pack))
        started = time.perf_counter()
        report = unpacking.verify_pack(pack, signer.public)
        check_times.append(time.perf_counter() - started)
        assert report.ok, report.problems[:5]
    size = pack.stat().st_size
    print(
        f"export + sign ({args.events:,} decision events, {args.records:,} records): {min(export_times):.1f} s "
        f"(pack {size / 2**20:.0f} MiB); floor (raw read + gzip) {min(export_floors):.1f} s; "
        f"ratio {min(export_times) / min(export_floors):.2f}"
    )
    print(
        f"verify-pack: {min(check_times):.1f} s; floor (gunzip + sha256) {min(check_floors):.1f} s; "
        f"ratio {min(check_times) / min(check_floors):.2f}"
    )
    engine.dispose()


if __name__ == "__main__":
    main()
