"""Exporting an audit pack: one tenant's evidence of a time range, signed, in one file.

``armctl audit export --tenant T [--since] [--until] --out pack.tar.gz`` calls :func:`anchor`
(a signed checkpoint of the tenant's chain, so the newest records and archives are anchored),
then :func:`export`, which writes each section of :data:`SECTIONS` to a scratch file next to the output
while hashing it, the tenant's archives of the range as they are, and finally the tar: the
manifest, its signature, the files in the manifest's order (``evidence.packs`` describes the
format). The output appears whole or not at all (written under a temporary name, renamed).

Decision events are exported as stored: their arguments and reasons were redacted when they
were recorded (``decisions.deciding``), and no private key is ever written. The range selects
change records by time as a contiguous stretch of the chain (the first record at or after
``since`` to the last before ``until``), op events, approvals and runs by time, and archives
that hold events of the range; checkpoints are all exported, the chain of signatures from the
tenant's first. A new kind of evidence is one more entry in :data:`SECTIONS`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.evidence import checkpoints, packs, recording, retention
from reconciler.evidence import keys as keys_
from reconciler.state import database, tables

__all__ = ["SECTIONS", "Exported", "anchor", "check", "export"]

#: Rows read from the store at a time.
_BATCH = 5000


@dataclasses.dataclass(frozen=True)
class Range:
    tenant: str
    since: dt.datetime | None
    until: dt.datetime | None
    #: the stretch of the tenant's chain exported: records from_seq..to_seq (none when from_seq > to_seq)
    from_seq: int = 1
    to_seq: int = 0

    def where(self, column: Any) -> list[Any]:
        terms = []
        if self.since is not None:
            terms.append(column >= self.since)
        if self.until is not None:
            terms.append(column < self.until)
        return terms


@dataclasses.dataclass(frozen=True)
class Exported:
    path: Path
    files: list[dict[str, Any]]
    kid: str


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z") if value else None


def _checkpoints(connection: sa.Connection, scope: Range) -> Iterator[dict[str, Any]]:
    c = tables.chain_checkpoints.c
    query = sa.select(tables.chain_checkpoints).where(c.tenant == scope.tenant).order_by(c.number)
    for row in connection.execute(query).mappings():
        yield {**checkpoints.body(row), "signature": row["signature"], "hash": row["hash"]}


def _stretch(connection: sa.Connection, tenant: str, since: dt.datetime | None, until: dt.datetime | None) -> tuple[int, int]:
    """The records of the range as a stretch of the chain: from the first at or after ``since``
    (the chain's first without it) to the last before ``until``."""
    r = tables.change_records.c
    until_terms = [r.at < until] if until is not None else []
    last = connection.execute(sa.select(sa.func.max(r.seq)).where(r.tenant == tenant, *until_terms)).scalar() or 0
    if since is None:
        return 1, last
    first = connection.execute(sa.select(sa.func.min(r.seq)).where(r.tenant == tenant, r.at >= since)).scalar()
    return (last + 1 if first is None else min(first, last + 1)), last


def _raw(connection: sa.Connection) -> tuple[Any, Any, Any]:
    """(a driver cursor, how a stored JSON value enters a record, how a stored time does): rows
    are read through the driver, as stored — SQLite's JSON text goes into the line as it is
    (``orjson.Fragment``), its times are reformatted as text — since a row through SQLAlchemy's
    result processing costs more than writing it."""
    if connection.dialect.name == "sqlite":
        return database.driver_cursor(connection), _fragment, chain.sqlite_at
    # A server-side cursor: psycopg's default one would hold every row of the range in memory.
    raw = connection.connection.driver_connection
    assert raw is not None
    return raw.cursor(name=f"arm_pack_{next(_CURSORS)}"), _same, _iso


_CURSORS = itertools.count()


def _fragment(value: Any) -> Any:
    return None if value is None else orjson.Fragment(value)


def _same(value: Any) -> Any:
    return value


def _change_records(connection: sa.Connection, scope: Range) -> Iterator[dict[str, Any]]:
    """Each record as ``{body, hash, prevHash, id, runId}``: ``body`` is the canonical JSON the
    hash covers (``audit.chain.body``), so ``sha256(prevHash + body)`` checks it as written."""
    if scope.from_seq > scope.to_seq:
        return
    cursor, _, _ = _raw(connection)
    bodies = chain.Bodies(connection.dialect.name)
    mark = database.placeholder(connection.dialect.name)
    cursor.execute(
        f"SELECT {chain.BODY_COLUMNS}, id, run_id FROM change_records"
        f" WHERE tenant = {mark} AND seq >= {mark} AND seq <= {mark} ORDER BY seq",
        [scope.tenant, scope.from_seq, scope.to_seq],
    )
    while rows := cursor.fetchmany(_BATCH):
        for r in rows:
            encoded, _ = bodies.of(r)
            yield {"body": orjson.Fragment(encoded), "hash": r[12], "prevHash": r[11], "id": r[13], "runId": r[14]}


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): _iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}


def _approvals(connection: sa.Connection, scope: Range) -> Iterator[dict[str, Any]]:
    a = tables.approvals.c
    created, decided = scope.where(a.created_at), scope.where(a.decided_at)
    inside = sa.or_(sa.and_(*created), sa.and_(*decided)) if created else sa.true()
    query = sa.select(tables.approvals).where(a.tenant == scope.tenant, inside).order_by(a.id)
    for row in connection.execute(query).mappings():
        yield _plain(row)


def _evaluation_runs(connection: sa.Connection, scope: Range) -> Iterator[dict[str, Any]]:
    """The evaluation runs recorded in the range, as ``GET /v1/evaluations`` lists them; each was
    written with an ``EVALUATION_RECORDED`` change record at the same time, so the range's
    stretch of the chain holds the record that vouches for it."""
    r = tables.evaluation_runs.c
    query = sa.select(tables.evaluation_runs).where(r.tenant == scope.tenant, *scope.where(r.at)).order_by(r.id)
    for row in connection.execute(query).mappings():
        yield {**recording.run_json(row), "at": _iso(row["at"]), "suiteDigest": row["suite_digest"]}


def _runs(connection: sa.Connection, scope: Range) -> Iterator[dict[str, Any]]:
    """The reconcile runs of the range: the commits applied (SHA, author), their outcome. A run
    covers the whole fleet: its errors (which may name other tenants' files) are counted only."""
    r = tables.reconcile_runs.c
    query = sa.select(tables.reconcile_runs).where(*scope.where(r.started_at)).order_by(r.id)
    for row in connection.execute(query).mappings():
        yield {
            "id": row["id"], "ref": row["ref"], "path": row["path"], "sha": row["sha"], "author": row["author"],
            "outcome": row["outcome"], "actions": row["actions"], "startedAt": _iso(row["started_at"]),
            "finishedAt": _iso(row["finished_at"]), "errors": len(row["errors"] or []),
        }  # fmt: skip


def _op_events(connection: sa.Connection, scope: Range) -> Iterator[dict[str, Any]]:
    cursor, json_value, stamp = _raw(connection)
    mark = database.placeholder(connection.dialect.name)
    terms, values = ["tenant = " + mark], [scope.tenant]
    if scope.since is not None:
        terms.append("at >= " + mark)
        values.append(database.bind_at(scope.since, connection.dialect.name))
    if scope.until is not None:
        terms.append("at < " + mark)
        values.append(database.bind_at(scope.until, connection.dialect.name))
    cursor.execute(
        f"SELECT id, tenant, at, type, instance, payload, call_key FROM op_events WHERE {' AND '.join(terms)} ORDER BY id", values
    )
    while rows := cursor.fetchmany(_BATCH):
        for r in rows:
            yield {
                "id": r[0], "tenant": r[1], "at": stamp(r[2]), "type": r[3], "instance": r[4], "payload": json_value(r[5]),
                "callKey": r[6],
            }  # fmt: skip


#: The ``.jsonl`` files of a pack, in order: (file name, what writes its records). One more kind
#: of evidence is one more entry here.
SECTIONS: tuple[tuple[str, Callable[[sa.Connection, Range], Iterator[dict[str, Any]]]], ...] = (
    (packs.CHECKPOINTS, _checkpoints),
    (packs.CHANGE_RECORDS, _change_records),
    (packs.APPROVALS, _approvals),
    (packs.EVALUATION_RUNS, _evaluation_runs),
    (packs.RUNS, _runs),
    (packs.OP_EVENTS, _op_events),
)


class _Hashing:
    """A file being written and hashed at once."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.stream.write(data)
        self.digest.update(data)
        self.size += len(data)


def export(
    connection: sa.Connection,
    tenant: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    out: Path,
    signer: keys_.Signer,
    policy: retention.Policy,
    now: dt.datetime,
    generator: str,
) -> Exported:
    """Write the pack of ``tenant`` for [since, until) to ``out``; see the module docstring.
    ``connection`` only reads (one snapshot, so the store's writers are not held up): sign the
    anchoring checkpoint first with :func:`anchor`, in a transaction of its own."""
    check(connection, tenant, since, until)
    scope = Range(tenant, since, until, *_stretch(connection, tenant, since, until))
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".arm-pack-", dir=out.parent) as scratch:
        work = Path(scratch)
        files: list[dict[str, Any]] = []
        sources: list[Path] = []

        def add(name: str, path: Path, digest: str, size: int, records: int | None) -> None:
            entry: dict[str, Any] = {"name": name, "sha256": digest, "bytes": size}
            if records is not None:
                entry["records"] = records
            files.append(entry)
            sources.append(path)

        published = keys_.published(connection)
        for name, document in (
            (packs.KEYS, {"keys": published}),
            (packs.RETENTION, policy.as_dict()),
        ):
            data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
            path = work / name
            path.write_bytes(data)
            add(name, path, hashlib.sha256(data).hexdigest(), len(data), None)
        for index, (name, produce) in enumerate(SECTIONS):
            path = work / f"{index}.jsonl"
            count, previous = 0, packs.GENESIS
            with path.open("wb", buffering=1 << 20) as stream:
                hashing = _Hashing(stream)
                for record in produce(connection, scope):
                    line, previous = packs.line_of(previous, record)
                    hashing.write(line)
                    count += 1
            add(name, path, hashing.digest.hexdigest(), hashing.size, count)
        for row in _archives(connection, scope):
            path = policy.archive_dir / row["name"]
            if not path.is_file():
                raise errors.StoreError(f"archive {row['name']} of tenant {tenant} is missing from {policy.archive_dir}")
            digest = checkpoints.file_sha256(path)
            if digest != row["sha256"]:
                raise errors.StoreError(f"archive {path} does not match its recorded hash: run 'armctl audit verify'")
            add(packs.ARCHIVES + row["name"], path, digest, path.stat().st_size, row["events"])
        manifest = {
            "format": packs.FORMAT,
            "tenant": tenant,
            "since": _iso(since),
            "until": _iso(until),
            "createdAt": _iso(now),
            "generator": generator,
            "kid": signer.kid,
            "chain": {"fromSeq": scope.from_seq, "toSeq": scope.to_seq},
            "files": files,
        }
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        signature = {
            "algorithm": keys_.ALGORITHM,
            "kid": signer.kid,
            "signature": base64.b64encode(signer.sign(manifest_bytes)).decode(),
        }
        partial = work / "pack.tar.gz"
        with tarfile.open(partial, mode="w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, packs.MANIFEST, manifest_bytes, now)
            _add_bytes(tar, packs.SIGNATURE, json.dumps(signature, indent=2).encode() + b"\n", now)
            for entry, path in zip(files, sources, strict=True):
                info = tarfile.TarInfo(entry["name"])
                info.size, info.mtime, info.mode = entry["bytes"], int(now.timestamp()), 0o644
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, out)
    return Exported(out, files, signer.kid)


def check(connection: sa.Connection, tenant: str, since: dt.datetime | None, until: dt.datetime | None) -> None:
    """Refuse an unknown tenant or an empty range before anything is written."""
    if connection.execute(sa.select(tables.tenants.c.name).where(tables.tenants.c.name == tenant)).first() is None:
        raise errors.NotFound(f"tenant {tenant!r} does not exist")
    if since is not None and until is not None and since >= until:
        raise errors.ConfigError(f"--since ({_iso(since)}) must be before --until ({_iso(until)})")


def anchor(connection: sa.Connection, tenant: str, signer: keys_.Signer, now: dt.datetime) -> int | None:
    """Sign a checkpoint of the tenant's chain and archives if they moved since the last one, so
    the pack's newest records are anchored; its number."""
    written = checkpoints.write(connection, signer, now, [tenant])
    return written[0]["number"] if written else None


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, now: dt.datetime) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(now.timestamp()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _archives(connection: sa.Connection, scope: Range) -> list[Any]:
    """The tenant's archives (not yet pruned) holding events of the range."""
    a = tables.op_event_archives.c
    terms = [a.tenant == scope.tenant, a.pruned_at.is_(None)]
    if scope.since is not None:
        terms.append(a.last_at >= scope.since)
    if scope.until is not None:
        terms.append(a.first_at < scope.until)
    return list(connection.execute(sa.select(tables.op_event_archives).where(*terms).order_by(a.first_id)).mappings())
