"""Verifying the change-record chains of a SQLite store at the speed of reading them.

``audit.chain.verify`` calls :func:`verify_sqlite` on SQLite. What it does differently from the
general path (``chain.verify_generic``), measured by ``bench/bench_evidence.py``:

- the driver hands out bytes, not text: no UTF-8 decoding of 13 columns a row;
- a tenant's rows are read without the tenant and the id (the id is looked up for a break only);
- each body is one ``%`` formatting of bytes and one SHA-256 (``audit.hashing``, which worker
  processes import without the rest of the package);
- a long chain (:data:`PARALLEL_FROM` records) is cut into stretches verified in worker
  processes, one per core (plain interpreters running ``audit.hashing.serve``, which imports
  nothing else of the package), each starting from the state the pass in one process would have there
  (the sequence number and hash of the record before the stretch), so the breaks found, and their
  order, are exactly the same. Workers open the database file read-only; the stretches end at the
  records the caller's snapshot holds, and records are only ever appended.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.audit import chain, hashing
from reconciler.state import tables

log = logging.getLogger(__name__)

__all__ = ["PARALLEL_FROM", "verify_sqlite"]

#: From this many records on, the chains are verified in worker processes (one per core): below
#: it, starting the workers costs more than they save.
PARALLEL_FROM = 200_000


def verify_sqlite(connection: sa.Connection, workers: int | None = None) -> Iterator[chain.Break]:
    """Every broken link of every chain, as ``chain.verify`` names them. ``workers``: how many
    processes (default: one per core once the store holds :data:`PARALLEL_FROM` records)."""
    raw = connection.connection.driver_connection
    assert raw is not None
    factory = raw.text_factory
    raw.text_factory = bytes
    try:
        cursor = raw.cursor()
        ends = cursor.execute("SELECT tenant, max(seq), count(*) FROM change_records GROUP BY tenant ORDER BY tenant").fetchall()
        total = sum(row[2] for row in ends)
        path = connection.engine.url.database
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if total >= PARALLEL_FROM else 1
        if workers > 1 and path and path != ":memory:" and Path(path).is_file():
            found = _in_workers(cursor, [(t.decode(), last) for t, last, _ in ends], path, workers)
        else:
            found = [
                b
                for t, last, _ in ends
                for b in hashing.verify(cursor, (t.decode(), hashing.LOWEST, last, 0, chain.GENESIS_HASH.encode()))
            ]
    finally:
        raw.text_factory = factory
    c = tables.change_records.c
    for tenant, seq, reason in found:
        record_id = connection.execute(sa.select(c.id).where(c.tenant == tenant, c.seq == seq)).scalar() or 0
        yield chain.Break(tenant, seq, record_id, reason)


def _in_workers(cursor: Any, ends: list[tuple[str, int]], path: str, workers: int) -> list[hashing.Found]:
    stretches: list[hashing.Stretch] = []
    total = sum(last for _, last in ends) or 1
    for tenant, last in ends:
        pieces = max(1, round(2 * workers * last / total))
        size = -(-last // pieces)
        for first in range(1, last + 1, size):
            before = cursor.execute(
                "SELECT seq, hash FROM change_records WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT 1", [tenant, first]
            ).fetchone()
            seq, head = before if before is not None else (0, chain.GENESIS_HASH.encode())
            stretches.append((tenant, hashing.LOWEST if first == 1 else first, min(first + size - 1, last), seq, head))
    return _run_workers(cursor, path, stretches, workers)


def _run_workers(cursor: Any, path: str, stretches: list[hashing.Stretch], workers: int) -> list[hashing.Found]:
    """The stretches verified by ``workers`` processes running ``audit.hashing.serve``: plain
    interpreters importing that one module (not forked: the caller may hold threads and locks;
    not multiprocessing's spawn, which imports the caller's main module again). Workers that
    cannot start or fail leave the work to this process: the check never fails for want of them."""
    shares = [list(range(n, len(stretches), workers)) for n in range(workers)]
    package = str(Path(hashing.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package, os.environ.get("PYTHONPATH")]))}
    results: dict[int, list[hashing.Found]] = {}
    try:
        running = []
        for share in shares:
            process = subprocess.Popen(
                [sys.executable, "-c", "from reconciler.audit import hashing; hashing.serve()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            work = {"path": path, "stretches": [[*stretches[i][:4], stretches[i][4].decode()] for i in share]}
            assert process.stdin is not None
            process.stdin.write(json.dumps(work).encode())
            process.stdin.close()
            running.append((process, share))
        for process, share in running:
            assert process.stdout is not None and process.stderr is not None
            answer, errors = process.stdout.read(), process.stderr.read()
            if process.wait() != 0:
                raise OSError(f"a worker exited {process.returncode}: {errors.decode(errors='replace').strip()[-300:]}")
            for i, found in zip(share, json.loads(answer), strict=True):
                results[i] = [(t, seq, reason) for t, seq, reason in found]
    except (OSError, ValueError) as exc:
        log.warning("verifying the chains in this process: the worker processes failed (%s)", exc)
        return [b for stretch in stretches for b in hashing.verify(cursor, stretch)]
    return [b for i in range(len(stretches)) for b in results[i]]
