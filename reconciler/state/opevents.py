"""Op events: the high-volume operational log (decisions, heartbeats, cost ticks, tool results).

Time-indexed rows in ``op_events``; this module writes them, answers the two questions a
decision asks of them (how much an instance has spent, in a run and today; how often it made
the same call recently), and applies the retention: older events are archived to gzipped
JSON Lines files (one per tenant and batch, recorded with their SHA-256 in ``op_event_archives``),
then deleted; archives past the archive retention are deleted in turn (``prune_archives``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler import money
from reconciler.state import database, tables

__all__ = [
    "add",
    "archive_and_prune",
    "calls_since",
    "decisions",
    "decisions_per_minute",
    "insert_decisions",
    "prune_archives",
    "spent",
    "tick_micros",
]


_e = tables.op_events.c
# Built once: these run on every decision, and building a statement costs more than running it.
_CALLS_SINCE = sa.select(sa.func.count()).where(
    _e.instance == sa.bindparam("instance"),
    _e.call_key == sa.bindparam("call_key"),
    _e.at >= sa.bindparam("since"),
    _e.tenant == sa.bindparam("tenant"),
)
_COSTS = sa.select(_e.payload).where(
    _e.tenant == sa.bindparam("tenant"), _e.instance == sa.bindparam("instance"), tables.COST_ONLY
)
_COSTS_SINCE = _COSTS.where(_e.at >= sa.bindparam("since"))
_COSTS_BEFORE = _COSTS.where(_e.at < sa.bindparam("since"))


def add(connection: sa.Connection, events: Iterable[dict[str, Any]]) -> None:
    """Insert events: each ``{tenant, at, type, instance, payload}``."""
    rows = list(events)
    if rows:
        connection.execute(tables.op_events.insert(), rows)


#: How many op events one page of decisions searches at most, going back from where it starts:
#: decisions are indexed by time only, so a filter that matches rarely would otherwise read the
#: whole table for one page.
SEARCH_EVENTS = 100_000


def decisions(
    connection: sa.Connection,
    tenant: str,
    *,
    instance: str | None = None,
    tool: str | None = None,
    result: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
    search: int = SEARCH_EVENTS,
) -> tuple[list[dict[str, Any]], int | None]:
    """``tenant``'s stored decisions, newest first, from before op event ``before_id`` (None: the
    newest), filtered by instance, tool and result (ALLOW, NEEDS_APPROVAL, DENY), among the next
    ``search`` op events at most: ``id``, ``at``, ``instance`` and the payload as recorded
    (arguments redacted). Also where the next page starts (its ``before_id``), None when nothing
    older is left."""
    top = before_id if before_id is not None else int(connection.execute(sa.select(sa.func.max(_e.id))).scalar() or 0) + 1
    floor = max(0, top - 1 - search)
    query = sa.select(_e.id, _e.at, _e.instance, _e.payload).where(
        _e.id < top, _e.id > floor, _e.tenant == tenant, _e.type == "DECISION"
    )
    if instance:
        query = query.where(_e.instance == instance)
    if tool:
        query = query.where(_e.payload["tool"].as_string() == tool)
    if result:
        query = query.where(_e.payload["decision"].as_string() == result.upper())
    rows = [
        {"id": row.id, "at": row.at.isoformat(), "instance": row.instance, **row.payload}
        for row in connection.execute(query.order_by(_e.id.desc()).limit(limit))
    ]
    following = rows[-1]["id"] if len(rows) == limit else floor + 1 if floor > 0 else None
    return rows, following


#: The newest op events the per-minute counts read at most: their cost grows with the decision
#: rate, and a page that shows them must answer in well under a second.
PER_MINUTE_EVENTS = 20_000


def decisions_per_minute(
    connection: sa.Connection, tenant: str, since: dt.datetime, *, newest: int = PER_MINUTE_EVENTS
) -> tuple[dict[dt.datetime, dict[str, int]], dt.datetime | None]:
    """Minute (UTC, whole) → decision result → how many decisions of ``tenant`` were stored in it,
    from ``since`` on, counted over the ``newest`` op events at most (by id, the order they were
    stored in); and, when that bound cut the window short, the time from which the counts are
    complete (the minutes before it count only part of their decisions)."""
    last = connection.execute(sa.select(sa.func.max(_e.id))).scalar() or 0
    floor = max(0, last - newest)
    if connection.dialect.name == "postgresql":
        minute: Any = sa.func.date_trunc("minute", _e.at)
    else:  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff': the first 16 characters are the minute
        minute = sa.func.substr(_e.at, 1, 16)
    result = _e.payload["decision"].as_string()
    query = (
        sa.select(minute.label("minute"), result.label("result"), sa.func.count().label("n"))
        .where(_e.id > floor, _e.at >= since, _e.tenant == tenant, _e.type == "DECISION")
        .group_by(minute, result)
    )
    found: dict[dt.datetime, dict[str, int]] = {}
    for row in connection.execute(query):
        at = row.minute if isinstance(row.minute, dt.datetime) else dt.datetime.fromisoformat(row.minute + ":00")
        at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
        found.setdefault(at, {})[row.result] = row.n
    cut = connection.execute(sa.select(_e.at).where(_e.id > floor).order_by(_e.id).limit(1)).scalar() if floor else None
    return found, cut if cut is not None and cut > since else None


def insert_decisions(cursor: Any, dialect: str, rows: list[tuple[str, dt.datetime, str, str, str]]) -> list[int]:
    """Insert DECISION events through a DB-API cursor in its open write transaction; their ids.

    Each row is ``(tenant, at, instance, payload JSON text, call key)``. The ids are taken up
    front, so one ``executemany`` writes the lot without a RETURNING per row: on SQLite the
    transaction holds the write lock (``BEGIN IMMEDIATE``), so ``max(id) + 1 ...`` are free (a
    single row is inserted alone and its rowid read back: the same id, one statement less); on
    PostgreSQL they come from the column's sequence. Values are stored exactly as SQLAlchemy
    stores them (``at`` in UTC, on SQLite as ``YYYY-MM-DD HH:MM:SS.ffffff``), so they read back
    the same through the tables.
    """
    if not rows:
        return []
    if dialect == "sqlite":
        if len(rows) == 1:  # the usual batch when decisions come one at a time: one statement
            tenant, at, instance, payload, key = rows[0]
            cursor.execute(
                "INSERT INTO op_events (tenant, at, type, instance, payload, call_key) VALUES (?, ?, 'DECISION', ?, ?, ?)",
                (tenant, database.bind_at(at, "sqlite"), instance, payload, key),
            )
            return [int(cursor.lastrowid)]  # ``id`` is the rowid: max(id) + 1, as below
        cursor.execute("SELECT coalesce(max(id), 0) FROM op_events")
        first = int(cursor.fetchone()[0]) + 1
        ids = list(range(first, first + len(rows)))
        cursor.executemany(
            "INSERT INTO op_events (id, tenant, at, type, instance, payload, call_key) VALUES (?, ?, ?, 'DECISION', ?, ?, ?)",
            [
                (i, tenant, database.bind_at(at, "sqlite"), instance, payload, key)
                for i, (tenant, at, instance, payload, key) in zip(ids, rows, strict=True)
            ],
        )
        return ids
    cursor.execute("SELECT nextval(pg_get_serial_sequence('op_events', 'id')) FROM generate_series(1, %s)", [len(rows)])
    ids = [int(r[0]) for r in cursor.fetchall()]
    cursor.executemany(
        "INSERT INTO op_events (id, tenant, at, type, instance, payload, call_key)"
        " VALUES (%s, %s, %s, 'DECISION', %s, %s::jsonb, %s)",
        [(i, *row) for i, row in zip(ids, rows, strict=True)],
    )
    return ids


def spent(connection: sa.Connection, tenant: str, instance: str, run_id: str | None, day_start: dt.datetime) -> tuple[int, int]:
    """(spent in ``run_id``, spent since ``day_start``) from the instance's COST events, in
    micro-units: each tick is turned into whole micro-units before it is added, so a total is exact."""
    where = {"tenant": tenant, "instance": instance, "since": day_start}
    rows = connection.execute(_COSTS_SINCE, where).scalars()
    run_total = day_total = 0
    for payload in rows:
        amount = tick_micros(payload)
        day_total += amount
        if run_id is not None and payload.get("runId") == run_id:
            run_total += amount
    if run_id is not None:
        older = connection.execute(_COSTS_BEFORE, where).scalars()
        run_total += sum(tick_micros(p) for p in older if p.get("runId") == run_id)
    return run_total, day_total


def tick_micros(payload: Any) -> int:
    """A COST event's amount in micro-units (0 for a payload without a usable one: events are
    checked when they are taken in, ``decisions.events``)."""
    amount = payload.get("amount") if isinstance(payload, dict) else None
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount <= money.MAX_AMOUNT:
        return 0
    return money.micros(amount)


def calls_since(connection: sa.Connection, tenant: str, instance: str, call_key: str, since: dt.datetime) -> int:
    """How many decisions the instance asked for the same call (tool and arguments) since then."""
    return int(
        connection.execute(
            _CALLS_SINCE, {"tenant": tenant, "instance": instance, "call_key": call_key, "since": since}
        ).scalar_one()
    )


def archive_and_prune(
    connection: sa.Connection,
    older_than: dt.datetime,
    archive_dir: Path,
    batch: int = 5000,
    *,
    keep_days: int = 180,
    now: dt.datetime | None = None,
) -> int:
    """Move events older than ``older_than`` to gzipped JSON Lines files, then delete them.

    One file per tenant and batch (``op-events-<tenant>-<cutoff>-<first id>.jsonl.gz``), so a
    tenant's archives hold its events alone. Each is written and fsynced before any row is
    deleted, so an interrupted run loses nothing (at worst it archives some rows twice), and
    recorded in ``op_event_archives`` with its SHA-256, its events and when its retention ends
    (``keep_days`` after its newest event): the next chain checkpoint lists it, signed.
    """
    e = tables.op_events.c
    archive_dir.mkdir(parents=True, exist_ok=True)
    made = now or dt.datetime.now(dt.UTC)
    moved = 0
    last_id = 0
    while True:
        rows = (
            connection.execute(sa.select(tables.op_events).where(e.at < older_than, e.id > last_id).order_by(e.id).limit(batch))
            .mappings()
            .all()
        )
        if not rows:
            return moved
        by_tenant: dict[str, list[Any]] = {}
        for row in rows:
            by_tenant.setdefault(row["tenant"], []).append(row)
        for tenant, group in by_tenant.items():
            name = f"op-events-{_SAFE.sub('_', tenant)}-{older_than:%Y%m%dT%H%M%S}-{group[0]['id']}.jsonl.gz"
            path = archive_dir / name
            with gzip.open(path, "wt", encoding="utf-8") as out:
                for row in group:
                    out.write(json.dumps({**row, "at": row["at"].isoformat()}, default=str, sort_keys=True) + "\n")
            with path.open("rb") as written:
                os.fsync(written.fileno())
                digest = hashlib.sha256(written.read())
            last_at = max(row["at"] for row in group)
            connection.execute(
                tables.op_event_archives.insert().values(
                    tenant=tenant,
                    name=name,
                    sha256=digest.hexdigest(),
                    bytes=path.stat().st_size,
                    events=len(group),
                    first_id=group[0]["id"],
                    last_id=group[-1]["id"],
                    first_at=min(row["at"] for row in group),
                    last_at=last_at,
                    created_at=made,
                    keep_until=last_at + dt.timedelta(days=keep_days),
                )
            )
        ids = [row["id"] for row in rows]
        connection.execute(tables.op_events.delete().where(e.id.in_(ids)))
        moved += len(ids)
        last_id = ids[-1]


#: Characters kept from a tenant's name in an archive's file name.
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def prune_archives(connection: sa.Connection, archive_dir: Path, now: dt.datetime) -> list[str]:
    """Delete the archives whose retention ended (``keep_until`` passed); their names.

    The row stays, marked ``pruned_at``: the next chain checkpoint lists the pruning, so a
    verification can tell an archive deleted after its retention from one removed before.
    """
    a = tables.op_event_archives
    due = connection.execute(
        sa.select(a.c.id, a.c.name).where(a.c.pruned_at.is_(None), a.c.keep_until <= now).order_by(a.c.id)
    ).all()
    for row in due:
        (archive_dir / row.name).unlink(missing_ok=True)
    if due:
        connection.execute(a.update().where(a.c.id.in_([row.id for row in due])).values(pruned_at=now))
    return [row.name for row in due]
