"""Replaying recorded decisions, and exporting them for a replay elsewhere.

``armctl replay --head REF`` decides every recorded decision of the configured database again
under the head commit's policy (``policy.replays.Replayer``), and ``armctl plan --replay FILE``
does the same from a file that ``armctl events export`` wrote (gzipped JSON Lines, one recorded
decision a line: ``{id, tenant, at, instance, payload}``, its arguments redacted as stored), so a
pull request's CI needs no access to the production database.

Both read a stream: rows come through the driver in batches (PostgreSQL: a server-side cursor),
a file line by line, so a million decisions never sit in memory at once.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from reconciler import errors
from reconciler.state import database

__all__ = ["export", "from_database", "from_file", "parse_since"]

_BATCH = 5000
_PAYLOAD = b',"payload":'
_SINCE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Row = tuple[Any, str, Any, str | None, Any]


def parse_since(text: str | None, now: dt.datetime) -> dt.datetime | None:
    """``7d``, ``12h``, ``30m`` (back from ``now``) or an ISO 8601 time; None for None."""
    if text is None:
        return None
    match = _SINCE.fullmatch(text.strip())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise errors.ConfigError(f"--since {text!r}: give a duration (7d, 12h, 30m) or an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def from_database(connection: sa.Connection, since: dt.datetime | None = None, tenant: str | None = None) -> Iterator[Row]:
    """The recorded decisions, oldest first: (id, tenant, at, instance, payload as JSON text)."""
    dialect = connection.dialect.name
    mark = database.placeholder(dialect)
    payload = "payload::text" if dialect == "postgresql" else "payload"
    sql = f"SELECT id, tenant, at, instance, {payload} FROM op_events WHERE type = 'DECISION'"
    params: list[Any] = []
    if since is not None:
        sql += f" AND at >= {mark}"
        params.append(database.bind_at(since, dialect))
    if tenant is not None:
        sql += f" AND tenant = {mark}"
        params.append(tenant)
    sql += " ORDER BY id"
    raw = connection.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor(name="arm_replay") if dialect == "postgresql" else raw.cursor()
    try:
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(_BATCH)
            if not rows:
                return
            yield from rows
    finally:
        cursor.close()


def from_file(path: str) -> Iterator[Row]:
    """The decisions of an ``armctl events export`` file, as :func:`from_database` gives them."""
    try:
        handle: IO[bytes] = gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115
    except OSError as exc:
        raise errors.ConfigError(f"--replay {path}: cannot read it: {exc.strerror or exc}") from exc
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    # The payload is written last and as stored: kept as text, so a replayer finds
                    # a payload it has seen by its text without decoding it again.
                    cut = line.find(_PAYLOAD)
                    if cut > 0 and line.rstrip().endswith(b"}"):
                        event = orjson.loads(line[:cut] + b"}")
                        payload: Any = line[cut + len(_PAYLOAD) : len(line.rstrip()) - 1]
                    else:
                        event = orjson.loads(line)
                        payload = event["payload"]
                    yield event["id"], event["tenant"], event["at"], event.get("instance"), payload
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise errors.ConfigError(
                        f"--replay {path}: line {number} is not a recorded decision as 'armctl events export' writes it"
                    ) from exc
        except (OSError, EOFError) as exc:
            raise errors.ConfigError(f"--replay {path}: cannot read it: {exc}") from exc


def _gzipped(path: str) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def export(connection: sa.Connection, out: Path, since: dt.datetime | None = None, tenant: str | None = None) -> int:
    """Write the recorded decisions to ``out`` (gzipped JSON Lines, arguments as stored: redacted);
    how many. Written to a temporary file first and renamed, so a reader never sees half of it."""
    partial = out.with_name(out.name + ".partial")
    count = 0
    try:
        with gzip.open(partial, "wb", compresslevel=5) as handle:
            for decision_id, tenant_, at, instance, payload in from_database(connection, since, tenant):
                stamp = at if isinstance(at, str) else at.isoformat()
                body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
                handle.write(
                    b'{"id":%d,"tenant":%s,"at":%s,"instance":%s,"payload":%s}\n'
                    % (decision_id, orjson.dumps(tenant_), orjson.dumps(stamp), orjson.dumps(instance), body)
                )
                count += 1
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise errors.ConfigError(f"--out {out}: cannot write it: {exc.strerror or exc}") from exc
    return count
