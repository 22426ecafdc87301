"""Signed checkpoints of each tenant's change-record chain, and their verification.

The hash chain (``audit.chain``) catches an edited, removed or reordered record in the middle,
but not the newest records cut off: the head of the chain is anchored nowhere. A checkpoint
anchors it, as CloudTrail's digest files do: per tenant, numbered from 1, it states the chain's
sequence number and head hash at a time, the hash of the tenant's previous checkpoint, and the
op-event archives made (and pruned past their retention) since that one, and it is signed with
the current Ed25519 key (``evidence.keys``). Its ``hash`` is ``sha256(canonical_json(body))``
and its ``signature`` is over the same canonical body.

:func:`write` adds one for every tenant whose chain or archives moved since its last checkpoint,
under the tenant's chain lock, in the caller's transaction: the reconciler calls it in every
apply's transaction, the daemon every ``ARM_CHECKPOINT_INTERVAL_SECONDS``.

:func:`verify` (``armctl audit verify``) checks each tenant's checkpoints against each other and
against the chain: numbers without a gap, each linking to the one before, hashes and signatures
(by a known key), sequence numbers that never go back, and each anchored record still there with
the hash the checkpoint states: a deleted newest record (tail truncation) and a rewritten chain
(records re-hashed without the key) both show, naming the checkpoint and the record. The
archives listed are checked against the files (present and unchanged until their retention
ended; an archive pruned earlier is a break).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.desired import genome
from reconciler.evidence import keys as keys_
from reconciler.state import tables

__all__ = ["Break", "Tally", "body", "chain_end", "checkpoint_hash", "file_sha256", "latest", "verify", "verify_rows", "write"]

log = logging.getLogger(__name__)

#: What the first checkpoint of a tenant links to.
GENESIS = chain.GENESIS_HASH


def _at(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def body(row: Any) -> dict[str, Any]:
    """The signed part of a checkpoint (stored row or exported document)."""
    at = row["at"]
    return {
        "tenant": row["tenant"],
        "number": row["number"],
        "seq": row["seq"],
        "head": row["head"],
        "at": at if isinstance(at, str) else _at(at),
        "previous": row["previous"],
        "archives": row["archives"],
        "pruned": row["pruned"],
        "kid": row["kid"],
    }


def checkpoint_hash(row: Any) -> str:
    return "sha256:" + hashlib.sha256(genome.canonical_json(body(row))).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_entry(row: Any) -> dict[str, Any]:
    """How a checkpoint lists an op-event archive made since the previous one."""
    return {
        "name": row["name"],
        "sha256": row["sha256"],
        "events": row["events"],
        "firstAt": _at(row["first_at"]),
        "lastAt": _at(row["last_at"]),
        "keepUntil": _at(row["keep_until"]),
    }


def _tenants(connection: sa.Connection) -> list[str]:
    names = {r[0] for r in connection.execute(sa.select(tables.tenants.c.name))}
    a = tables.op_event_archives.c
    names |= {r[0] for r in connection.execute(sa.select(a.tenant).where(a.listed_in.is_(None)).distinct())}
    names |= {
        r[0] for r in connection.execute(sa.select(a.tenant).where(a.pruned_at.is_not(None), a.pruned_in.is_(None)).distinct())
    }
    return sorted(names)


def _latest(connection: sa.Connection, tenant: str) -> Any:
    c = tables.chain_checkpoints.c
    query = sa.select(tables.chain_checkpoints).where(c.tenant == tenant).order_by(c.number.desc()).limit(1)
    return connection.execute(query).mappings().first()


def latest(connection: sa.Connection, tenant: str) -> dict[str, Any] | None:
    """``tenant``'s newest checkpoint (number, the record it anchors, its time and key), or None."""
    row = _latest(connection, tenant)
    if row is None:
        return None
    return {"number": row["number"], "seq": row["seq"], "head": row["head"], "at": body(row)["at"], "kid": row["kid"]}


def chain_end(connection: sa.Connection, tenant: str) -> int:
    """The sequence number of ``tenant``'s newest change record (0: none yet)."""
    r = tables.change_records.c
    return int(connection.execute(sa.select(sa.func.max(r.seq)).where(r.tenant == tenant)).scalar() or 0)


def write(
    connection: sa.Connection, signer: keys_.Signer, now: dt.datetime, tenants: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Sign a checkpoint for each tenant (of ``tenants``, default all) whose chain grew or whose
    archives changed since its last checkpoint; the checkpoints written.

    A chain found shorter than its last checkpoint is not anchored again (that would hide the
    cut): the break stays for ``verify`` to name, and is logged.
    """
    keys_.register(connection, signer.public, signer.source, now)
    names = sorted(set(tenants)) if tenants is not None else _tenants(connection)
    heads = chain.locked_heads(connection, names)
    a, cp = tables.op_event_archives, tables.chain_checkpoints
    written = []
    for tenant in names:
        seq, head = heads.get(tenant, (0, GENESIS))
        last = _latest(connection, tenant)
        added = (
            connection.execute(sa.select(a).where(a.c.tenant == tenant, a.c.listed_in.is_(None)).order_by(a.c.first_id))
            .mappings()
            .all()
        )
        pruned = (
            connection.execute(
                sa.select(a)
                .where(a.c.tenant == tenant, a.c.pruned_at.is_not(None), a.c.pruned_in.is_(None))
                .order_by(a.c.first_id)
            )
            .mappings()
            .all()
        )
        if last is not None and seq < last["seq"]:
            log.error(
                "the change-record chain of tenant %s ends at record %d, below checkpoint %d (record %d): not anchoring it again",
                tenant, seq, last["number"], last["seq"],
            )  # fmt: skip
            continue
        if last is not None and (seq, head) == (last["seq"], last["head"]) and not added and not pruned:
            continue
        if last is None and seq == 0 and not added and not pruned:
            continue
        row: dict[str, Any] = {
            "tenant": tenant,
            "number": (last["number"] if last else 0) + 1,
            "seq": seq,
            "head": head,
            "at": now,
            "previous": last["hash"] if last else GENESIS,
            "archives": [archive_entry(r) for r in added],
            "pruned": [{"name": r["name"], "sha256": r["sha256"], "prunedAt": _at(r["pruned_at"])} for r in pruned],
            "kid": signer.kid,
        }
        canonical = genome.canonical_json(body(row))
        row["signature"] = base64.b64encode(signer.sign(canonical)).decode()
        row["hash"] = "sha256:" + hashlib.sha256(canonical).hexdigest()
        row["id"] = connection.execute(cp.insert().values(**row).returning(cp.c.id)).scalar_one()
        if added:
            connection.execute(a.update().where(a.c.id.in_([r["id"] for r in added])).values(listed_in=row["id"]))
        if pruned:
            connection.execute(a.update().where(a.c.id.in_([r["id"] for r in pruned])).values(pruned_in=row["id"]))
        written.append(row)
    return written


@dataclasses.dataclass(frozen=True)
class Break:
    """Something wrong between the checkpoints and what they anchor, named."""

    tenant: str
    checkpoint: int | None  # the checkpoint's number, when one is concerned
    record: int | None  # the chain record's sequence number, when one is concerned
    reason: str

    def __str__(self) -> str:
        parts = [f"tenant {self.tenant}"]
        if self.checkpoint is not None:
            parts.append(f"checkpoint {self.checkpoint}")
        if self.record is not None:
            parts.append(f"record {self.record}")
        return f"{', '.join(parts)}: {self.reason}"


@dataclasses.dataclass
class Tally:
    """What a verification covered, per tenant: checkpoints, the last anchored record, the
    chain's length, and how many newer records no checkpoint anchors yet."""

    checkpoints: int = 0
    anchored: int = 0
    last_at: str | None = None
    records: int = 0


def verify_rows(
    tenant: str,
    checkpoints: Sequence[Any],
    record_hash: Mapping[int, str],
    chain_end: int,
    public_keys: Mapping[str, keys_.PublicKey],
    *,
    first: int = 1,
    until: str | None = None,
) -> Iterator[Break]:
    """The breaks of one tenant's ``checkpoints`` (ordered by number), given the hash of each
    record they anchor (``record_hash``: seq → hash, absent when the record is gone) and the
    chain's last sequence number. Shared by :func:`verify` and the audit pack's verification.

    An audit pack holds the stretch ``first``..``chain_end`` of the chain (the hash of record
    ``first - 1`` being the first record's ``prevHash``): checkpoints anchoring records before it
    are checked as signatures only, and one anchoring a record past it is a cut-off tail only
    when it was signed before ``until`` (the pack's end: records after it are not in the pack)."""
    expected_number, previous, previous_seq, previous_at = 1, GENESIS, 0, ""
    for cp in checkpoints:
        number = cp["number"]
        if number != expected_number:
            missing = f"{expected_number}" if number == expected_number + 1 else f"{expected_number} to {number - 1}"
            yield Break(
                tenant, number, None, f"checkpoint {missing} missing: the numbers jump from {expected_number - 1} to {number}"
            )
        elif cp["previous"] != previous:
            yield Break(tenant, number, None, "does not link to the checkpoint before it (previous hash differs)")
        if checkpoint_hash(cp) != cp["hash"]:
            yield Break(tenant, number, None, "its hash does not match its content (altered)")
        key = public_keys.get(cp["kid"])
        if key is None:
            yield Break(tenant, number, None, f"signed by key {cp['kid']}, which is not a known key")
        else:
            try:
                signature = base64.b64decode(cp["signature"], validate=True)
            except (binascii.Error, ValueError):
                signature = b""
            if not key.verify(signature, genome.canonical_json(body(cp))):
                yield Break(tenant, number, None, f"the signature does not verify with key {cp['kid']} (forged or altered)")
        at = body(cp)["at"]
        if at < previous_at:
            yield Break(tenant, number, None, f"its time {at} is before the previous checkpoint's {previous_at}")
        seq = cp["seq"]
        if seq < previous_seq:
            yield Break(tenant, number, seq, f"anchors record {seq}, behind the previous checkpoint's record {previous_seq}")
        if seq > 0 and (seq >= first - 1 and (seq <= chain_end or until is None or at < until)):
            stored = record_hash.get(seq)
            if seq > chain_end:
                yield Break(
                    tenant, number, seq,
                    f"the chain ends at record {chain_end} but this checkpoint ({at}) anchors record {seq} "
                    f"({cp['head']}): the newest records were removed (tail truncated)",
                )  # fmt: skip
            elif stored is None:
                yield Break(tenant, number, seq, f"record {seq} anchored by this checkpoint ({at}) is missing")
            elif stored != cp["head"]:
                yield Break(
                    tenant, number, seq,
                    f"record {seq} hashes to {stored}, the checkpoint of {at} anchored {cp['head']}: the chain was rewritten",
                )  # fmt: skip
        expected_number, previous, previous_seq, previous_at = (
            number + 1,
            cp["hash"],
            max(seq, previous_seq),
            max(at, previous_at),
        )


def verify(
    connection: sa.Connection, public_keys: Mapping[str, keys_.PublicKey], archive_dir: Path | None, now: dt.datetime
) -> tuple[list[Break], dict[str, Tally]]:
    """Every checkpoint break of every tenant, and what was covered (see the module docstring).
    With ``archive_dir``, the archives the checkpoints list are checked against its files."""
    c, r = tables.chain_checkpoints.c, tables.change_records.c
    by_tenant: dict[str, list[Any]] = {}
    for row in connection.execute(sa.select(tables.chain_checkpoints).order_by(c.tenant, c.number)).mappings():
        by_tenant.setdefault(row["tenant"], []).append(row)
    ends = dict(connection.execute(sa.select(r.tenant, sa.func.max(r.seq)).group_by(r.tenant)).all())
    breaks: list[Break] = []
    tally: dict[str, Tally] = {}
    for tenant in sorted(set(by_tenant) | set(ends)):
        rows = by_tenant.get(tenant, [])
        anchored = sorted({row["seq"] for row in rows if row["seq"] > 0})
        hashes: dict[int, str] = {}
        for start in range(0, len(anchored), 500):
            part = anchored[start : start + 500]
            query = sa.select(r.seq, r.hash).where(r.tenant == tenant, r.seq.in_(part))
            hashes.update(dict(connection.execute(query).all()))
        end = int(ends.get(tenant) or 0)
        breaks.extend(verify_rows(tenant, rows, hashes, end, public_keys))
        if archive_dir is not None:
            breaks.extend(_verify_archives(tenant, rows, archive_dir, now))
        last = rows[-1] if rows else None
        tally[tenant] = Tally(len(rows), last["seq"] if last else 0, body(last)["at"] if last else None, end)
    return breaks, tally


def _verify_archives(tenant: str, checkpoints: list[Mapping[str, Any]], archive_dir: Path, now: dt.datetime) -> Iterator[Break]:
    """Each archive listed is in ``archive_dir`` with its hash, unless a later checkpoint lists
    its pruning, which must come after its retention ended."""
    listed: dict[str, tuple[int, Mapping[str, Any]]] = {}
    pruned: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for cp in checkpoints:
        for entry in cp["archives"]:
            listed[entry["name"]] = (cp["number"], entry)
        for entry in cp["pruned"]:
            pruned[entry["name"]] = (cp["number"], entry)
    for name, (number, entry) in listed.items():
        if name in pruned:
            pruned_number, gone = pruned[name]
            if gone["prunedAt"] < entry["keepUntil"]:
                yield Break(
                    tenant, pruned_number, None,
                    f"archive {name} was deleted at {gone['prunedAt']}, before its retention ended ({entry['keepUntil']})",
                )  # fmt: skip
            continue
        path = archive_dir / name
        if not path.is_file():
            yield Break(tenant, number, None, f"archive {name} is missing from {archive_dir} (kept until {entry['keepUntil']})")
        elif file_sha256(path) != entry["sha256"]:
            yield Break(tenant, number, None, f"archive {name} does not match its hash {entry['sha256']} (altered)")
