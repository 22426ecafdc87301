"""The change-record hash chain: every change the reconciler or an operator makes, linked.

Each tenant has its own chain. A record's ``hash`` is
``sha256(prev_hash + canonical_json(body))`` where the body is every field of the record but
the two hashes (see :func:`body`); the first record links to :data:`GENESIS_HASH`. Changing,
removing or reordering any stored record breaks every hash after it, which ``verify`` finds.

:class:`Chain` hands out sequence numbers and hashes while a transaction builds records, so a
whole apply is written with one ``executemany``; nothing is written if the transaction fails.

Every write of records also writes, on the same connection, the notification outbox rows of the
records some NotificationChannel wants (``notifications.outbox``): a record and its notifications
are committed together or not at all, whoever writes them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler.desired import genome
from reconciler.notifications import outbox
from reconciler.state import actual as actual_
from reconciler.state import database, locking, tables

__all__ = [
    "GENESIS_HASH",
    "Chain",
    "Record",
    "append_raw",
    "body",
    "body_hash",
    "canonical",
    "record_hash",
    "verify",
    "verify_generic",
]

GENESIS_HASH = actual_.GENESIS_HASH


@dataclasses.dataclass(frozen=True)
class Record:
    tenant: str
    type: str
    object_kind: str
    object_name: str
    before: Any = None
    after: Any = None
    sha: str | None = None
    author: str = ""
    operator: str | None = None


def _at(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def body(row: Any) -> dict[str, Any]:
    """The hashed part of a stored (or about to be stored) record."""
    return {
        "tenant": row["tenant"],
        "seq": row["seq"],
        "sha": row["sha"],
        "author": row["author"],
        "operator": row["operator"],
        "type": row["type"],
        "object": {"kind": row["object_kind"], "name": row["object_name"]},
        "before": row["before"],
        "after": row["after"],
        "at": _at(row["at"]),
    }


def record_hash(prev_hash: str, row: Any) -> str:
    return body_hash(prev_hash, body(row))


def body_hash(prev_hash: str, hashed: dict[str, Any]) -> str:
    """A record's hash from its hashed part as :func:`body` gives it (an audit pack holds that)."""
    return "sha256:" + hashlib.sha256(prev_hash.encode() + canonical(hashed)).hexdigest()


#: A number with a fraction or an exponent in orjson's output: where its float formatting and the
#: canonical form (``desired.genome``: ECMAScript's) may differ (``1.0`` against ``1``).
_FLOATISH = re.compile(rb"[\[:,]-?\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+)(?=[,\]}])")


def canonical(value: Any) -> bytes:
    """``genome.canonical_json(value)``, byte for byte, ~5× faster on records without floats:
    orjson with sorted keys writes the same bytes for strings, integers, booleans and null;
    anything it writes differently (a float, an integer past 64 bits, a key that is not a str) goes
    through the canonical encoder. Verifying a chain at 200,000 records/s needs this."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return genome.canonical_json(value)
    if _FLOATISH.search(text) is not None:
        return genome.canonical_json(value)
    return text


class Chain:
    """Builds linked rows for ``change_records`` from the current heads of the tenants' chains."""

    def __init__(self, heads: dict[str, tuple[int, str]], run_id: int | None = None) -> None:
        self._heads = dict(heads)
        self.run_id = run_id
        self.rows: list[dict[str, Any]] = []

    def add(self, record: Record, at: dt.datetime) -> dict[str, Any]:
        seq, prev = self._heads.get(record.tenant, (0, GENESIS_HASH))
        row = {
            "tenant": record.tenant,
            "seq": seq + 1,
            "sha": record.sha,
            "author": record.author,
            "operator": record.operator,
            "type": record.type,
            "object_kind": record.object_kind,
            "object_name": record.object_name,
            "before": record.before,
            "after": record.after,
            "at": at,
            "run_id": self.run_id,
            "prev_hash": prev,
        }
        row["hash"] = record_hash(prev, row)
        self._heads[record.tenant] = (seq + 1, row["hash"])
        self.rows.append(row)
        return row

    def heads(self) -> dict[str, tuple[int, str]]:
        """Each tenant's chain head once the records added so far are written."""
        return dict(self._heads)

    def write(self, connection: sa.Connection) -> int:
        if self.rows:
            database.bulk_insert(connection, tables.change_records, [_stored(row) for row in self.rows])
            outbox.enqueue_records(database.driver_cursor(connection), connection.dialect.name, self.rows)
        written = len(self.rows)
        self.rows = []
        return written


def locked_heads(connection: sa.Connection, tenants: Iterable[str]) -> dict[str, tuple[int, str]]:
    """The chain heads of ``tenants``, read after taking each tenant's chain lock.

    On PostgreSQL concurrent writers (a reconcile, an approval, a DENY) would otherwise read
    the same head and collide on the next sequence number; a transaction-scoped advisory lock
    per tenant serialises them. SQLite writers are already serialised by its write lock.
    """
    return _locked_heads(database.driver_cursor(connection), connection.dialect.name, tenants)


def _locked_heads(cursor: Any, dialect: str, tenants: Iterable[str]) -> dict[str, tuple[int, str]]:
    mark = database.placeholder(dialect)
    heads: dict[str, tuple[int, str]] = {}
    for tenant in sorted(set(tenants)):
        locking.lock_with_cursor(cursor, dialect, f"arm-chain:{tenant}")
        cursor.execute(f"SELECT seq, hash FROM change_records WHERE tenant = {mark} ORDER BY seq DESC LIMIT 1", [tenant])
        row = cursor.fetchone()
        if row is not None:
            heads[tenant] = (int(row[0]), row[1])
    return heads


def append(connection: sa.Connection, records: Iterable[Record], at: dt.datetime) -> list[dict[str, Any]]:
    """Append records outside a reconcile (operator actions, decisions), under the chain lock."""
    records = list(records)
    chain = Chain(locked_heads(connection, {r.tenant for r in records}))
    rows = [chain.add(r, at) for r in records]
    chain.write(connection)
    return rows


_RAW_COLUMNS = ("tenant", "seq", "sha", "author", "operator", "type", "object_kind", "object_name")


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row as it is written: ``before`` and ``after`` as their canonical JSON text, the very
    bytes the record's hash covers, so a verification can hash the stored text as it is."""
    return {**row, "before": database.RawJSON(canonical(row["before"]).decode()),
            "after": database.RawJSON(canonical(row["after"]).decode())}  # fmt: skip


def _raw_row(row: dict[str, Any], stored_at: Any) -> tuple[Any, ...]:
    before, after = canonical(row["before"]).decode(), canonical(row["after"]).decode()
    return (*(row[c] for c in _RAW_COLUMNS), before, after, stored_at, row["run_id"], row["prev_hash"], row["hash"])


def append_raw(cursor: Any, dialect: str, records: Iterable[Record], at: dt.datetime) -> list[dict[str, Any]]:
    """:func:`append` through a DB-API cursor in an open write transaction (the decision
    writer's): the same locks, heads, hashes and stored values, without SQLAlchemy."""
    records = list(records)
    mark = database.placeholder(dialect)
    chain = Chain(_locked_heads(cursor, dialect, {r.tenant for r in records}))
    rows = [chain.add(r, at) for r in records]
    stored_at = database.bind_at(at, dialect)
    json_mark = "?" if dialect == "sqlite" else "%s::jsonb"
    cursor.executemany(
        "INSERT INTO change_records (tenant, seq, sha, author, operator, type, object_kind, object_name, before, after,"
        f" at, run_id, prev_hash, hash) VALUES ({', '.join([mark] * 8)}, {json_mark}, {json_mark}, {', '.join([mark] * 4)})",
        [_raw_row(r, stored_at) for r in rows],
    )
    outbox.enqueue_records(cursor, dialect, rows)
    return rows


@dataclasses.dataclass(frozen=True)
class Break:
    tenant: str
    seq: int
    id: int
    reason: str


#: The columns :class:`Bodies` reads, in its order.
BODY_COLUMNS = "tenant, seq, sha, author, operator, type, object_kind, object_name, before, after, at, prev_hash, hash"


class Bodies:
    """The hashed part of stored records (:func:`body`) as canonical JSON bytes, from rows read
    through the driver (``BODY_COLUMNS``), and the hash they give.

    On SQLite ``before`` and ``after`` come back as their stored text, which is the canonical
    JSON the hash covers (``_stored``): the body is put together as text, without decoding them.
    A row whose text is not canonical (written before the text was) is decoded and re-encoded.
    A row through SQLAlchemy's result processing costs more than hashing it; this is what lets
    ``audit verify`` and an audit pack's export keep up with the store."""

    def __init__(self, dialect: str) -> None:
        self.text_json = dialect == "sqlite"  # PostgreSQL gives decoded jsonb
        self.stamp = sqlite_at if self.text_json else _at
        self.text = _JsonStrings()

    def of(self, row: Any) -> tuple[bytes, str]:
        """(the canonical body, ``sha256(prev_hash + body)``) of a ``BODY_COLUMNS`` row."""
        text = self.text
        before, after, at, prev = row[8], row[9], self.stamp(row[10]), row[11]
        if self.text_json:
            encoded = (
                f'{{"after":{after or "null"},"at":"{at}","author":{text[row[3]]},"before":{before or "null"},'
                f'"object":{{"kind":{text[row[6]]},"name":{text[row[7]]}}},"operator":{text[row[4]]},'
                f'"seq":{row[1]},"sha":{text[row[2]]},"tenant":{text[row[0]]},"type":{text[row[5]]}}}'
            ).encode()
            digest = "sha256:" + hashlib.sha256(prev.encode() + encoded).hexdigest()
            if digest == row[12]:
                return encoded, digest
            before = None if before is None else orjson.loads(before)
            after = None if after is None else orjson.loads(after)
        hashed = {
            "tenant": row[0], "seq": row[1], "sha": row[2], "author": row[3], "operator": row[4], "type": row[5],
            "object": {"kind": row[6], "name": row[7]}, "before": before, "after": after, "at": at,
        }  # fmt: skip
        encoded = canonical(hashed)
        return encoded, "sha256:" + hashlib.sha256(prev.encode() + encoded).hexdigest()


def verify(connection: sa.Connection) -> Iterator[Break]:
    """Every broken link, per tenant in order: a wrong hash, a wrong prev_hash, a gap in seq.

    On SQLite the rows are read as bytes and hashed in worker processes for a long chain
    (``audit.verifying``); elsewhere through :class:`Bodies`."""
    if connection.dialect.name == "sqlite":
        # Imported here: ``verifying`` builds on this module.
        from reconciler.audit import verifying

        yield from verifying.verify_sqlite(connection)
    else:
        yield from verify_generic(connection)


def verify_generic(connection: sa.Connection) -> Iterator[Break]:
    """:func:`verify` through :class:`Bodies`, on any store (on SQLite the benchmark's baseline),
    the rows streamed from the store in batches."""
    bodies = Bodies(connection.dialect.name)
    if connection.dialect.name == "postgresql":
        # A server-side cursor: psycopg's default one would hold every record in memory first.
        raw = connection.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor(name=f"arm_verify_{next(_CURSORS)}")
    else:
        cursor = database.driver_cursor(connection)
    cursor.execute(f"SELECT {BODY_COLUMNS}, id FROM change_records ORDER BY tenant, seq")
    tenant: str = ""
    seq, prev = 0, GENESIS_HASH
    while rows := cursor.fetchmany(5000):
        for row in rows:
            if row[0] != tenant:
                tenant, seq, prev = row[0], 0, GENESIS_HASH
            if row[1] != seq + 1:
                yield Break(tenant, row[1], row[13], f"sequence jumps from {seq} to {row[1]} (records missing)")
            elif row[11] != prev:
                yield Break(tenant, row[1], row[13], "prev_hash does not link to the record before it")
            elif bodies.of(row)[1] != row[12]:
                yield Break(tenant, row[1], row[13], "hash does not match the record's content (altered)")
            seq, prev = row[1], row[12]


_CURSORS = itertools.count()


class _JsonStrings(dict[Any, str]):
    """A value (text or None) → its canonical JSON text, remembered: a chain repeats its tenants,
    types, authors and objects."""

    def __missing__(self, value: Any) -> str:
        encoded = canonical(value).decode()
        if len(self) < 100_000:
            self[value] = encoded
        return encoded


def sqlite_at(value: str) -> str:
    """A time as SQLite stores it (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC) in the hashed form."""
    if len(value) == 26 and value[10] == " ":
        return value[:10] + "T" + value[11:] + "Z"
    return _at(database.parse_at(value))


def count_query() -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(tables.change_records)
