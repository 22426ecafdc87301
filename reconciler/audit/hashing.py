"""Hashing stored change records as bytes: the inner loop of ``audit.verifying``.

Kept apart, importing nothing of the package, so a worker process that ``audit.verifying``
starts is running in a few milliseconds. A record's hashed text is put together from its columns as
SQLite stores them (``before`` and ``after`` are the canonical JSON the hash covers, written so by
``audit.chain``): one ``%`` formatting of bytes and one SHA-256 a row. A row whose hash does not
come out so (its stored text not canonical, its time in another form) is judged in the exact form
(``audit.chain.Bodies``, imported only then) before it is called a break.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import orjson

__all__ = ["LOWEST", "Found", "Stretch", "serve", "verify", "verify_file"]

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
LOWEST = -(2**63)


def serve() -> None:
    """A worker process: reads ``{"path", "stretches": [[tenant, first, last, seq, prev], ...]}``
    (JSON) on stdin, writes the breaks of each stretch (``[[[tenant, seq, reason], ...], ...]``)
    on stdout."""
    work = json.load(sys.stdin)
    stretches = [(t, first, last, seq, prev.encode()) for t, first, last, seq, prev in work["stretches"]]
    json.dump([verify_file(work["path"], stretch) for stretch in stretches], sys.stdout)


def verify_file(path: str, stretch: Stretch) -> list[Found]:
    """One stretch, read from the database file opened read-only."""
    connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        connection.text_factory = bytes
        return verify(connection.cursor(), stretch)
    finally:
        connection.close()


def verify(cursor: Any, stretch: Stretch) -> list[Found]:
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
    from reconciler.audit import chain  # only for a row the fast form does not match

    decoded = [tenant, *(v.decode() if isinstance(v, bytes) else v for v in row)]
    return chain.Bodies("sqlite").of(decoded)[1] == decoded[12]


class _JsonBytes(dict[Any, bytes]):
    """A stored text (bytes or None) → its canonical JSON as bytes, remembered: a chain repeats
    its tenants, types, authors and objects."""

    def __missing__(self, value: Any) -> bytes:
        # A text's canonical JSON is orjson's (as ``chain.canonical`` writes it); were it not, the
        # row would not hash right here and would be judged in the exact form.
        encoded = orjson.dumps(None if value is None else value.decode())
        if len(self) < 100_000:
            self[value] = encoded
        return encoded
