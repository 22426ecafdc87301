"""The notification outbox: what must be told, written in the transaction of what it tells.

:func:`enqueue_records` is called by ``audit.chain`` whenever change records are written — by a
reconcile, an operator, a sweep or the decision writer — on the same connection, so an outbox
row exists exactly when its change record does: a rolled-back transaction leaves neither, a
committed one both. :func:`enqueue` does the same for events that are not change records (a gate
starting to wait, a failed reconcile). Each event gets one row per channel that wants it
(``events.Channel.wants``); an event no channel wants costs one query (the tenant's channels) and
writes nothing, and a record type that is never told costs nothing at all.

Rows are written through the DB-API cursor of the caller's transaction (the decision writer has
no SQLAlchemy connection), in the same dialect-neutral SQL as ``audit.chain.append_raw``.
``BUDGET_EXCEEDED`` is told once per instance and channel in :data:`REPEAT_SECONDS`: an agent
that keeps calling past its budget is denied each time, but its channel is not flooded.
:func:`list_notifications` reads the rows back for ``armctl notifications list`` and the API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler import errors
from reconciler.notifications import events
from reconciler.state import database, tables

__all__ = ["REPEAT_SECONDS", "STATUSES", "enqueue", "enqueue_records", "list_notifications", "retry", "subscribed", "unsent"]

#: What an outbox row can be: waiting for (another) attempt, told, or given up on.
STATUSES = ("PENDING", "DELIVERED", "FAILED")

#: A BUDGET_EXCEEDED of the same instance is told to a channel at most once in this many seconds.
REPEAT_SECONDS = 900

#: Events told at most once per object and channel within :data:`REPEAT_SECONDS`.
_REPEATING = frozenset({"BUDGET_EXCEEDED"})

_COLUMNS = (
    "tenant, channel, event, object_kind, object_name, environment, record_seq, payload, status, attempts,"
    " next_attempt_at, created_at"
)


def enqueue_records(cursor: Any, dialect: str, rows: Iterable[dict[str, Any]]) -> int:
    """Outbox rows for the change records ``rows`` (as ``audit.chain`` builds them) that some
    channel wants, in the caller's transaction; how many were written."""
    told = [(row, event) for row in rows if (event := events.of_record(row)) is not None]
    if not told:
        return 0
    channels = _channels(cursor, dialect, {row["tenant"] for row, _ in told})
    wanted = [(events.record_event(row, event), row["at"]) for row, event in told if any(event in c.events for c in channels)]
    return _write(cursor, dialect, channels, wanted)


def enqueue(cursor: Any, dialect: str, told: Iterable[events.Event], at: dt.datetime) -> int:
    """Outbox rows for events that are not change records, in the caller's transaction."""
    told = list(told)
    if not told:
        return 0
    tenants = {e.tenant for e in told}
    channels = _channels(cursor, dialect, None if None in tenants else {t for t in tenants if t is not None})
    return _write(cursor, dialect, channels, [(e, at) for e in told if any(e.event in c.events for c in channels)])


def subscribed(cursor: Any, dialect: str, event: str, tenants: set[str]) -> bool:
    """Whether a channel of ``tenants`` wants ``event`` at all: lets a caller with many events to
    tell skip making them when nobody listens."""
    return any(event in c.events for c in _channels(cursor, dialect, tenants))


def _write(cursor: Any, dialect: str, channels: list[events.Channel], found: list[tuple[events.Event, Any]]) -> int:
    mark = database.placeholder(dialect)
    json_mark = "?" if dialect == "sqlite" else "%s::jsonb"
    values = []
    seen: set[tuple[str, str, str, str]] = set()
    places: dict[tuple[str | None, str, str], tuple[str, ...] | None] = {}
    for event, at in found:
        kind, name = events.scope(event)
        if (event.tenant, kind, name) not in places:
            places[(event.tenant, kind, name)] = _environments(cursor, dialect, event.tenant, kind, name)
        event = dataclasses.replace(event, environments=places[(event.tenant, kind, name)])
        shown = None if event.environments is None else ",".join(event.environments)[:253] or None
        stamp = database.bind_at(at, dialect)
        payload = orjson.dumps(event.payload(), option=orjson.OPT_NON_STR_KEYS).decode()
        for channel in channels:
            if not channel.wants(event):
                continue
            if event.event in _REPEATING:
                key = (channel.tenant, channel.name, event.event, event.object_name)
                if key in seen or _told_lately(cursor, mark, key, at, dialect):
                    continue
                seen.add(key)
            seq = event.record["seq"] if event.record else None
            values.append((channel.tenant, channel.name, event.event, event.object_kind, event.object_name,
                           shown, seq, payload, "PENDING", 0, stamp, stamp))  # fmt: skip
    if values:
        cursor.executemany(
            f"INSERT INTO notification_outbox ({_COLUMNS}) VALUES ({', '.join([mark] * 7)}, {json_mark}, {', '.join([mark] * 4)})",
            values,
        )
    return len(values)


def _told_lately(cursor: Any, mark: str, key: tuple[str, str, str, str], at: dt.datetime, dialect: str) -> bool:
    since = database.bind_at(at - dt.timedelta(seconds=REPEAT_SECONDS), dialect)
    cursor.execute(
        f"SELECT 1 FROM notification_outbox WHERE tenant = {mark} AND channel = {mark} AND event = {mark} AND object_name = {mark}"
        f" AND created_at > {mark} LIMIT 1",
        [*key, since],
    )
    return cursor.fetchone() is not None


def _channels(cursor: Any, dialect: str, tenants: set[str] | None) -> list[events.Channel]:
    """The applied channels of ``tenants`` (None: of every tenant)."""
    mark = database.placeholder(dialect)
    query = "SELECT tenant, name, spec FROM notification_channels WHERE status = 'ACTIVE'"
    params: list[Any] = []
    if tenants is not None:
        if not tenants:
            return []
        query += f" AND tenant IN ({', '.join([mark] * len(tenants))})"
        params = sorted(tenants)
    cursor.execute(query + " ORDER BY tenant, name", params)
    return [events.Channel.of(t, n, _json(spec)) for t, n, spec in cursor.fetchall()]


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _environments(cursor: Any, dialect: str, tenant: str | None, kind: str, name: str) -> tuple[str, ...] | None:
    """The environments an event happens in (``events.scope``): an instance's, a deployment's,
    those a version has live instances in; None for a tenant's or the fleet's (every one)."""
    mark = database.placeholder(dialect)
    if kind == "*":
        return events.EVERYWHERE
    if kind == "Instance":
        cursor.execute(f"SELECT environment FROM instances WHERE id = {mark}", [name])
    elif kind == "Deployment":
        cursor.execute(f"SELECT spec FROM deployment_specs WHERE tenant = {mark} AND name = {mark}", [tenant, name])
        row = cursor.fetchone()
        if row is not None:
            return (str(_json(row[0])["environment"]),)
        cursor.execute(
            f"SELECT environment FROM deployments WHERE tenant = {mark} AND name = {mark} ORDER BY generation DESC LIMIT 1",
            [tenant, name],
        )
    elif kind == "AgentVersion":
        cursor.execute(
            f"SELECT DISTINCT environment FROM instances WHERE tenant = {mark} AND version = {mark} AND state <> 'RETIRED'"
            " ORDER BY environment",
            [tenant, name],
        )
    else:
        return ()
    return tuple(str(r[0]) for r in cursor.fetchall())


def list_notifications(
    connection: sa.Connection,
    *,
    tenant: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    event: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Outbox rows, newest first, with their delivery status (``before``: ids below it, a page)."""
    o = tables.notification_outbox.c
    query = sa.select(tables.notification_outbox).order_by(o.id.desc()).limit(limit)
    for column, value in ((o.tenant, tenant), (o.status, status), (o.channel, channel), (o.event, event)):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(o.id < before)
    return [_listed(row) for row in connection.execute(query).mappings()]


def _listed(row: Any) -> dict[str, Any]:
    def at(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row["id"],
        "tenant": row["tenant"],
        "channel": row["channel"],
        "event": row["event"],
        "object": {"kind": row["object_kind"], "name": row["object_name"]},
        "environment": row["environment"],
        "summary": (row["payload"] or {}).get("summary"),
        "status": row["status"],
        "attempts": row["attempts"],
        "lastStatus": row["last_status"],
        "lastError": row["last_error"],
        "createdAt": at(row["created_at"]),
        "nextAttemptAt": at(row["next_attempt_at"]) if row["status"] == "PENDING" else None,
        "deliveredAt": at(row["delivered_at"]),
        "recordSeq": row["record_seq"],
    }


def retry(connection: sa.Connection, ids: Iterable[int], now: dt.datetime, *, failed: bool = False) -> list[int]:
    """Send rows again from their first attempt, due now: the ``ids`` named (each must exist and not
    be waiting already) and, with ``failed``, every FAILED row; the ids requeued. For a receiver
    fixed after the worker gave up on it, or a notification someone asks to be sent again."""
    o = tables.notification_outbox.c
    wanted = sorted(set(ids))
    if wanted:
        found = dict(connection.execute(sa.select(o.id, o.status).where(o.id.in_(wanted))).all())
        missing = [i for i in wanted if i not in found]
        if missing:
            raise errors.NotFound(f"no notification {', '.join(str(i) for i in missing)}")
        waiting = [i for i in wanted if found[i] == "PENDING"]
        if waiting:
            raise errors.Conflict(f"notification {', '.join(str(i) for i in waiting)} is already waiting to be sent")
    condition: sa.ColumnElement[bool] = o.id.in_(wanted)
    if failed:
        condition = sa.or_(condition, o.status == "FAILED")
    requeued = list(connection.execute(sa.select(o.id).where(condition).order_by(o.id)).scalars())
    if requeued:
        connection.execute(
            tables.notification_outbox.update()
            .where(o.id.in_(requeued))
            .values(status="PENDING", attempts=0, next_attempt_at=now, claimed_until=None, delivered_at=None)
        )
    return requeued


def unsent(connection: sa.Connection) -> dict[str, int]:
    """How many notifications wait for (another) attempt and how many were given up on: the
    ``/metrics`` gauges an operator alerts on."""
    o = tables.notification_outbox.c
    query = sa.select(o.status, sa.func.count()).where(o.status.in_(("PENDING", "FAILED"))).group_by(o.status)
    found = {status: int(n) for status, n in connection.execute(query)}
    return {"PENDING": found.get("PENDING", 0), "FAILED": found.get("FAILED", 0)}
