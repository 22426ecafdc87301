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


def test_decisions_are_counted_per_minute_and_result_for_one_tenant_within_a_bound(db_url: str) -> None:
    engine = database.connect(db_url)
    database.migrate(engine)
    minute = NOW.replace(second=0)

    def decision(tenant: str, seconds: float, result: str) -> dict[str, object]:
        at = minute + dt.timedelta(seconds=seconds)
        return {"tenant": tenant, "at": at, "type": "DECISION", "instance": "i", "payload": {"decision": result, "tool": "t"}}

    events = [
        decision("acme", -61, "ALLOW"),  # before the window
        decision("acme", 1, "ALLOW"), decision("acme", 2, "DENY"), decision("acme", 59.9, "NEEDS_APPROVAL"),
        decision("acme", 60, "DENY"), decision("globex", 61, "DENY"),
        {"tenant": "acme", "at": minute + dt.timedelta(seconds=62), "type": "COST", "instance": "i", "payload": {"amount": 1}},
    ]  # fmt: skip
    with engine.begin() as connection:
        opevents.add(connection, events)
    with engine.connect() as connection:
        counted, cut = opevents.decisions_per_minute(connection, "acme", minute)
        assert cut is None
        assert counted == {minute: {"ALLOW": 1, "DENY": 1, "NEEDS_APPROVAL": 1}, minute + dt.timedelta(minutes=1): {"DENY": 1}}
        # Bounded to the newest 3 events, the window is cut: counts are complete from the third newest on.
        counted, cut = opevents.decisions_per_minute(connection, "acme", minute, newest=3)
        assert counted == {minute + dt.timedelta(minutes=1): {"DENY": 1}} and cut == minute + dt.timedelta(seconds=60)
        newest, following = opevents.decisions(connection, "acme", limit=2)
        assert [d["decision"] for d in newest] == ["DENY", "NEEDS_APPROVAL"] and following == newest[-1]["id"]
        older, following = opevents.decisions(connection, "acme", before_id=following, result="allow")
        first, before_window = (minute + dt.timedelta(seconds=1)).isoformat(), (minute - dt.timedelta(seconds=61)).isoformat()
        assert [d["at"] for d in older] == [first, before_window] and following is None  # nothing older is left
        # A page searches a bounded stretch of events and says where the next one starts.
        found, following = opevents.decisions(connection, "acme", result="allow", search=4)
        assert found == [] and following == 4  # the newest 4 events hold no ALLOW: search on from event 4
        found, following = opevents.decisions(connection, "acme", result="allow", search=4, before_id=following)
        assert [d["at"] for d in found] == [first, before_window] and following is None
