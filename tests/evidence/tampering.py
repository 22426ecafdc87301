"""What an attacker with write access to the database or to a pack does, for the evidence tests:
edit change records and re-hash the chain without the key (a lying store), cut the newest records
off, and rebuild a pack's tar with files changed, added, removed or moved."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.state import tables


def rewrite_and_rehash(engine: sa.Engine, tenant: str, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit record ``seq`` of ``tenant``'s chain with ``change``, then recompute every hash from
    there on so the chain itself verifies again: all a store can do without the signing key."""
    r = tables.change_records
    with engine.begin() as connection:
        rows = [dict(row) for row in connection.execute(sa.select(r).where(r.c.tenant == tenant).order_by(r.c.seq)).mappings()]
        previous = chain.GENESIS_HASH
        for row in rows:
            if row["seq"] == seq:
                change(row)
            if row["seq"] >= seq:
                row["prev_hash"] = previous
                row["hash"] = chain.record_hash(previous, row)
                values = {k: row[k] for k in ("before", "after", "type", "author", "prev_hash", "hash")}
                connection.execute(r.update().where(r.c.id == row["id"]).values(**values))
            previous = row["hash"]


def cut_newest(engine: sa.Engine, tenant: str, count: int = 1) -> list[int]:
    """Delete the newest ``count`` records of ``tenant``'s chain; their sequence numbers."""
    r = tables.change_records
    with engine.begin() as connection:
        newest = list(
            connection.execute(sa.select(r.c.seq).where(r.c.tenant == tenant).order_by(r.c.seq.desc()).limit(count)).scalars()
        )
        connection.execute(r.delete().where(r.c.tenant == tenant, r.c.seq.in_(newest)))
    return sorted(newest)


def members(pack: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(pack, mode="r:gz") as tar:
        out = []
        for member in tar.getmembers():
            stream = tar.extractfile(member)
            assert stream is not None
            out.append((member.name, stream.read()))
        return out


def write_pack(path: Path, files: list[tuple[str, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def edit_lines(content: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    lines = content.split(b"\n")[:-1]
    return b"".join(line + b"\n" for line in edit(lines))
