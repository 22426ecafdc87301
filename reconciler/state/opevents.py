"""Op events: the high-volume operational log (decisions, heartbeats, cost ticks, tool results).

Time-indexed rows in ``op_events``; this module writes them, answers the two questions a
decision asks of them (how much an instance has spent, in a run and today; how often it made
the same call recently), and applies the retention: older events are archived to gzipped
JSON Lines files, then deleted.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler import money
from reconciler.state import database, tables

__all__ = ["add", "archive_and_prune", "calls_since", "insert_decisions", "spent", "tick_micros"]


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


def archive_and_prune(connection: sa.Connection, older_than: dt.datetime, archive_dir: Path, batch: int = 5000) -> int:
    """Move events older than ``older_than`` to gzipped JSON Lines files, then delete them.

    One file per run (``op-events-<cutoff>-<first id>.jsonl.gz``), written and fsynced before any
    row is deleted, so an interrupted run loses nothing (at worst it archives some rows twice).
    """
    e = tables.op_events.c
    archive_dir.mkdir(parents=True, exist_ok=True)
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
        path = archive_dir / f"op-events-{older_than:%Y%m%dT%H%M%S}-{rows[0]['id']}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({**row, "at": row["at"].isoformat()}, default=str, sort_keys=True) + "\n")
        with path.open("rb") as written:
            os.fsync(written.fileno())
        ids = [row["id"] for row in rows]
        connection.execute(tables.op_events.delete().where(e.id.in_(ids)))
        moved += len(ids)
        last_id = ids[-1]
