"""Op events: the high-volume operational log (decisions, heartbeats, cost ticks, tool results).

Time-indexed rows in ``op_events``; this module writes them and answers the two questions a
decision asks of them: how much an instance has spent (in a run, today) and how often it made
the same call recently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from reconciler.state import tables

__all__ = ["add", "calls_since", "spent"]


def add(connection: sa.Connection, events: Iterable[dict[str, Any]]) -> None:
    """Insert events: each ``{tenant, at, type, instance, payload}``."""
    rows = list(events)
    if rows:
        connection.execute(tables.op_events.insert(), rows)


def spent(
    connection: sa.Connection, tenant: str, instance: str, run_id: str | None, day_start: dt.datetime
) -> tuple[float, float]:
    """(spent in ``run_id``, spent since ``day_start``) from the instance's COST events."""
    e = tables.op_events.c
    rows = connection.execute(
        sa.select(e.payload).where(e.tenant == tenant, e.instance == instance, e.type == "COST", e.at >= day_start)
    ).scalars()
    run_total = day_total = 0.0
    for payload in rows:
        amount = float(payload.get("amount", 0) or 0)
        day_total += amount
        if run_id is not None and payload.get("runId") == run_id:
            run_total += amount
    if run_id is not None:
        older = connection.execute(
            sa.select(e.payload).where(e.tenant == tenant, e.instance == instance, e.type == "COST", e.at < day_start)
        ).scalars()
        run_total += sum(float(p.get("amount", 0) or 0) for p in older if p.get("runId") == run_id)
    return run_total, day_total


def calls_since(connection: sa.Connection, tenant: str, instance: str, call_key: str, since: dt.datetime) -> int:
    """How many decisions the instance asked for the same call (tool and arguments) since then."""
    e = tables.op_events.c
    rows = connection.execute(
        sa.select(e.payload).where(e.tenant == tenant, e.instance == instance, e.type == "DECISION", e.at >= since)
    ).scalars()
    return sum(1 for payload in rows if payload.get("callKey") == call_key)
