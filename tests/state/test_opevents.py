"""Op-event retention: archived to gzipped JSON Lines first, deleted after, nothing lost."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import sqlalchemy as sa

from reconciler.state import database, opevents, tables

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def test_old_events_are_archived_then_deleted(db_url: str, tmp_path: Path) -> None:
    engine = database.connect(db_url)
    database.migrate(engine)
    events = [
        {"tenant": "acme", "at": NOW - dt.timedelta(days=days), "type": "DECISION", "instance": "i", "payload": {"n": days}}
        for days in (45, 40, 31, 29, 1)
    ]
    with engine.begin() as connection:
        opevents.add(connection, events)
    with engine.begin() as connection:
        moved = opevents.archive_and_prune(connection, NOW - dt.timedelta(days=30), tmp_path / "archive", batch=2)
    assert moved == 3
    with engine.connect() as connection:
        kept = sorted(p["n"] for p in connection.execute(sa.select(tables.op_events.c.payload)).scalars())
    assert kept == [1, 29]
    archived = []
    for file in sorted((tmp_path / "archive").glob("*.jsonl.gz")):
        with gzip.open(file, "rt") as f:
            archived += [json.loads(line) for line in f]
    assert sorted(row["payload"]["n"] for row in archived) == [31, 40, 45]
    assert all(row["type"] == "DECISION" and row["at"].startswith("2026-10") for row in archived)
