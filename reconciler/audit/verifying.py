"""Verifying the change-record chains of a SQLite store at the speed of reading them.

``audit.chain.verify`` calls :func:`verify_sqlite` on SQLite. What it does differently from the
general path (``chain.verify_generic``), measured by ``bench/bench_evidence.py``:

- the driver hands out bytes, not text: no UTF-8 decoding of 13 columns a row;
- a tenant's rows are read without the tenant and the id (the id is looked up for a break only);
- each body is one ``%`` formatting of bytes (the stored ``before``/``after`` are the canonical
  JSON the hash covers, ``chain._stored``) and one SHA-256; a row whose hash does not come out so
  (its stored text not canonical, its time in another form) is judged in the exact form
  (``chain.Bodies``) before it is called a break;
- a long chain (:data:`PARALLEL_FROM` records) is cut into stretches verified in worker
  processes, one per core, each starting from the state the pass in one process would have there
  (the sequence number and hash of the record before the stretch), so the breaks found, and their
  order, are exactly the same. Workers open the database file read-only; the stretches end at the
  records the caller's snapshot holds, and records are only ever appended.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.state import tables

__all__ = ["PARALLEL_FROM", "verify_sqlite"]

#: From this many records on, the chains are verified in worker processes (one per core): below
#: it, starting the workers costs more than they save.
PARALLEL_FROM = 200_000

#: A stored record's hashed text from its columns as bytes: prev_hash, after, the time's date and
#: clock, author, before, kind, name, operator, seq, sha, tenant, type (keys in canonical order).
_BODY = (
    b'%s{"after":%s,"at":"%sT%sZ","author":%s,"before":%s,"object":{"kind":%s,"name":%s},"operator":%s,'
    b'"seq":%d,"sha":%s,"tenant":%s,"type":%s}'
)

#: (tenant, first seq, last seq, seq of the record before, its hash): one stretch of a chain.
Stretch = tuple[str, int, int, int, bytes]
Found = tuple[str, int, str]

#: Where a tenant's first stretch starts: below any sequence number, so a record stored with one
#: below 1 is read (and named) too.
_LOWEST = -(2**63)


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
                b for t, last, _ in ends for b in _verify(cursor, (t.decode(), _LOWEST, last, 0, chain.GENESIS_HASH.encode()))
            ]
    finally:
        raw.text_factory = factory
    c = tables.change_records.c
    for tenant, seq, reason in found:
        record_id = connection.execute(sa.select(c.id).where(c.tenant == tenant, c.seq == seq)).scalar() or 0
        yield chain.Break(tenant, seq, record_id, reason)


def _in_workers(cursor: Any, ends: list[tuple[str, int]], path: str, workers: int) -> list[Found]:
    stretches: list[Stretch] = []
    total = sum(last for _, last in ends) or 1
    for tenant, last in ends:
        pieces = max(1, round(2 * workers * last / total))
        size = -(-last // pieces)
        for first in range(1, last + 1, size):
            before = cursor.execute(
                "SELECT seq, hash FROM change_records WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT 1", [tenant, first]
            ).fetchone()
            seq, head = before if before is not None else (0, chain.GENESIS_HASH.encode())
            stretches.append((tenant, _LOWEST if first == 1 else first, min(first + size - 1, last), seq, head))
    # Spawned, not forked: the caller may hold threads and locks (a server, a daemon).
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return [b for found in pool.map(_verify_file, [path] * len(stretches), stretches) for b in found]


def _verify_file(path: str, stretch: Stretch) -> list[Found]:
    """A worker: one stretch, read from the database file opened read-only."""
    connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        connection.text_factory = bytes
        return _verify(connection.cursor(), stretch)
    finally:
        connection.close()


def _verify(cursor: Any, stretch: Stretch) -> list[Found]:
    """The breaks of one stretch of a tenant's chain, starting after record ``seq`` (hash ``prev``)."""
    tenant, first, last, seq, prev = stretch
    text = _JsonBytes()
    tenant_json = text[tenant.encode()]
    sha256, body_of = hashlib.sha256, _BODY.__mod__
    broken: list[Found] = []
    cursor.execute(
        "SELECT seq, sha, author, operator, type, object_kind, object_name, before, after, at, prev_hash, hash"
        " FROM change_records WHERE tenant = ? AND seq >= ? AND seq <= ? ORDER BY seq",
        [tenant, first, last],
    )
    while rows := cursor.fetchmany(10000):
        for row in rows:
            number, at, stored_prev, stored = row[0], row[9], row[10], row[11]
            if number != seq + 1:
                broken.append((tenant, number, f"sequence jumps from {seq} to {number} (records missing)"))
            elif stored_prev != prev:
                broken.append((tenant, number, "prev_hash does not link to the record before it"))
            else:
                body = body_of((
                    stored_prev, row[8] or b"null", at[:10], at[11:], text[row[2]], row[7] or b"null", text[row[5]],
                    text[row[6]], text[row[3]], number, text[row[1]], tenant_json, text[row[4]],
                ))  # fmt: skip
                if b"sha256:" + sha256(body).hexdigest().encode() != stored and not _exact(tenant, row):
                    broken.append((tenant, number, "hash does not match the record's content (altered)"))
            seq, prev = number, stored
    return broken


def _exact(tenant: str, row: tuple[Any, ...]) -> bool:
    """Whether a row read as bytes hashes right in the exact form (``chain.Bodies``)."""
    decoded = [tenant, *(v.decode() if isinstance(v, bytes) else v for v in row)]
    return chain.Bodies("sqlite").of(decoded)[1] == decoded[12]


class _JsonBytes(dict[Any, bytes]):
    """A stored text (bytes or None) → its canonical JSON as bytes, remembered: a chain repeats
    its tenants, types, authors and objects."""

    def __missing__(self, value: Any) -> bytes:
        encoded = chain.canonical(None if value is None else value.decode())
        if len(self) < 100_000:
            self[value] = encoded
        return encoded
