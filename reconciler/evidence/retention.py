"""Retention that meets the logging duty: what is kept where, for how long, and pruning it.

Op events (decisions, heartbeats, cost ticks, tool results, OPA decision logs) stay in the
database for ``ARM_OP_EVENT_RETENTION_DAYS`` (30 by default). Older ones are archived to gzipped
JSON Lines files in ``<state dir>/archive/`` — one per tenant and batch, recorded with its SHA-256
and listed in the tenant's next signed chain checkpoint — and kept there for
``ARM_ARCHIVE_RETENTION_DAYS`` from their newest event (180 by default: the six months the EU AI
Act asks logs to be kept, Art. 19 and 26(6)), then deleted, the deletion listed in a checkpoint
too. Change records and checkpoints are never deleted.

:func:`run` is the retention job (``armctl run`` every ``ARM_RETENTION_INTERVAL_SECONDS``,
``armctl events prune``); :func:`summary` is what ``armctl status`` shows of it. Works with
``state.opevents`` (the archive files and rows) and ``evidence.checkpoints``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.evidence import checkpoints
from reconciler.evidence import keys as keys_
from reconciler.state import opevents, tables

__all__ = ["Policy", "Swept", "run", "summary"]


@dataclasses.dataclass(frozen=True)
class Policy:
    """The retention in force."""

    database_days: int
    archive_days: int
    archive_dir: Path
    checkpoint_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "opEventRetentionDays": self.database_days,
            "archiveRetentionDays": self.archive_days,
            "archiveDirectory": str(self.archive_dir),
            "checkpointIntervalSeconds": self.checkpoint_seconds,
            "changeRecords": "kept in the database, never deleted (append-only, hash-chained per tenant)",
            "checkpoints": "kept in the database, never deleted (signed, chained per tenant)",
        }


@dataclasses.dataclass(frozen=True)
class Swept:
    archived: int
    pruned: list[str]
    checkpoints: int


def run(connection: sa.Connection, policy: Policy, now: dt.datetime, signer: keys_.Signer | None) -> Swept:
    """Archive op events past the database retention, delete archives past theirs, and (with a
    ``signer``) sign checkpoints listing both at once."""
    cutoff = now - dt.timedelta(days=policy.database_days)
    archived = opevents.archive_and_prune(connection, cutoff, policy.archive_dir, keep_days=policy.archive_days, now=now)
    pruned = opevents.prune_archives(connection, policy.archive_dir, now)
    written = checkpoints.write(connection, signer, now) if signer is not None and (archived or pruned) else []
    return Swept(archived, pruned, len(written))


def summary(connection: sa.Connection, policy: Policy) -> dict[str, Any]:
    """What is kept where: op events in the database (how many, since when), their archives
    (files, events, bytes, the oldest, the next deletion), change records and checkpoints."""
    e, a, r, c = tables.op_events.c, tables.op_event_archives.c, tables.change_records.c, tables.chain_checkpoints.c
    events, oldest_event = connection.execute(sa.select(sa.func.count(), sa.func.min(e.at))).one()
    kept = sa.select(
        sa.func.count(), sa.func.coalesce(sa.func.sum(a.events), 0), sa.func.coalesce(sa.func.sum(a.bytes), 0),
        sa.func.min(a.first_at), sa.func.min(a.keep_until),
    ).where(a.pruned_at.is_(None))  # fmt: skip
    files, archived, size, oldest_archived, next_prune = connection.execute(kept).one()
    pruned = connection.execute(sa.select(sa.func.count()).where(a.pruned_at.is_not(None))).scalar_one()
    records = connection.execute(sa.select(sa.func.count()).select_from(tables.change_records)).scalar_one()
    oldest_record = connection.execute(sa.select(sa.func.min(r.at))).scalar_one()
    count, last = connection.execute(sa.select(sa.func.count(), sa.func.max(c.at)).select_from(tables.chain_checkpoints)).one()

    def iso(value: Any) -> str | None:
        return value.isoformat() if isinstance(value, dt.datetime) else None

    return {
        **policy.as_dict(),
        "database": {"opEvents": events, "oldestOpEvent": iso(oldest_event)},
        "archives": {
            "directory": str(policy.archive_dir),
            "files": files,
            "events": int(archived),
            "bytes": int(size),
            "oldestEvent": iso(oldest_archived),
            "nextDeletion": iso(next_prune),
            "deletedAfterRetention": pruned,
        },
        "changeRecords": {"count": records, "oldest": iso(oldest_record), "kept": "forever"},
        "checkpoints": {"count": count, "last": iso(last)},
    }
