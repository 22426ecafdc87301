"""The decision ledger: what each instance spent and how often it repeated a call, in memory.

Budgets and loop detection ask two questions on every decision: how much has this instance
spent (today, in this run), and how often did it make this very call within the loop window.
Asking ``op_events`` each time costs two queries a decision; the ledger answers from memory
and is kept current from the same table:

- **seeded** from ``op_events`` (COST events since the start of the day, DECISION events within
  the largest loop window), for all instances at once; a process that decides once (``armctl
  decide``) does not seed it and asks the table instead;
- fed at once with what this process commits (``add_decisions``: the writer knows the ids);
- **tailed** for rows other processes wrote: ``id > last seen``, only the columns a DECISION or
  COST needs, skipping ids this process wrote. On PostgreSQL ids are taken before commit, so a
  transaction may commit an id below one already seen: the tail re-reads a slack of
  :data:`PG_SLACK` ids and drops those it saw (by id).
- A run's cost before today is not seeded: a run asked for the first time is summed from the
  table once (``load_run``), then kept current like the rest.

Every answer says None when the ledger does not hold what was asked (nothing seeded, a day or
window older than the seed, a run not loaded); the caller then loads it or asks the table.
Thread-safe: the decider's writer thread feeds and tails it while requests read it.
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
import threading
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler.state import database, opevents

__all__ = ["PG_SLACK", "Ledger"]

#: PostgreSQL: ids re-read behind the newest seen, for transactions that commit out of id order.
PG_SLACK = 1000


def _amount(payload: Any) -> tuple[int, Any]:
    """(a COST event's amount in micro-units, its run)."""
    if isinstance(payload, str | bytes):
        payload = orjson.loads(payload)
    if not isinstance(payload, dict):
        return 0, None
    return opevents.tick_micros(payload), payload.get("runId")


class Ledger:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        mark = database.placeholder(dialect)
        self._mark = mark
        self._lock = threading.Lock()
        # Spending in micro-units: whole numbers, so totals are exact (reconciler.money).
        self._day: dict[tuple[str, str, dt.date], int] = {}
        self._runs: dict[tuple[str, str, str], int] = {}
        # Each call's timestamps: one float for a call made once in the window (most are: their
        # arguments differ), else a sorted list. A float is not tracked by the garbage collector;
        # a server holds ~100,000 calls, and as lists they made each full collection take 35-60 ms,
        # a pause every decision in flight waits out.
        self._calls: dict[tuple[str, str, str], float | list[float]] = {}
        # (moment, call) in the order calls were taken in: prune pops what has expired from the
        # left instead of scanning every call (a server holds ~100,000 within a minute's window,
        # and a full scan held the event loop for tens of milliseconds)
        self._expiry: collections.deque[tuple[float, tuple[str, str, str]]] = collections.deque()
        # (first day, first decision timestamp) the ledger holds; None until it is seeded
        self._all: tuple[dt.date, float] | None = None
        self._horizon = 0.0
        self.pruned_at = 0.0  # when prune last ran (timestamp of its ``now``)
        self.last_id: int | None = None  # newest id the tail has taken into account
        self._own: set[int] = set()  # ids this process wrote above last_id
        self._seen: set[int] = set()  # PostgreSQL: ids within the slack already taken into account
        self._slack = PG_SLACK if dialect == "postgresql" else 0
        select = "SELECT id, type, tenant, instance, at, call_key, CASE WHEN type = 'COST' THEN payload END FROM op_events"
        self._tail_sql = f"{select} WHERE id > {mark} AND type IN ('DECISION', 'COST') ORDER BY id"
        self._max_sql = "SELECT coalesce(max(id), 0) FROM op_events"

    # ---------------------------------------------------------------- answers

    def spent(self, tenant: str, instance: str, run_id: str | None, day: dt.date) -> tuple[int, int] | None:
        """(spent in ``run_id``, spent on ``day``) in micro-units, or None when the ledger does not hold it."""
        with self._lock:
            seed = self._all
            if seed is None or day < seed[0]:
                return None
            run = 0
            if run_id is not None:
                known = self._runs.get((tenant, instance, run_id))
                if known is None:
                    return None
                run = known
            return run, self._day.get((tenant, instance, day), 0)

    def repeats(self, tenant: str, instance: str, key: str, since: dt.datetime) -> int | None:
        """Decisions on the same call since ``since``, or None when that is older than the seed."""
        moment = since.timestamp()
        with self._lock:
            seed = self._all
            if seed is None or moment < seed[1]:
                return None
            times = self._calls.get((tenant, instance, key))
            if times is None:
                return 0
            if isinstance(times, list):
                return len(times) - bisect.bisect_left(times, moment)
            return int(times >= moment)

    @property
    def holds_all(self) -> bool:
        return self._all is not None

    @property
    def horizon(self) -> float:
        return self._horizon

    # ---------------------------------------------------------------- loading

    def seed(self, connection: sa.Connection, now: dt.datetime, horizon: float) -> None:
        """Load COST events of today and DECISION events of the last ``horizon`` seconds; later
        rows come from the tail."""
        cursor = database.driver_cursor(connection)
        day = now.date()
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since = now - dt.timedelta(seconds=horizon)
        m = self._mark
        with self._lock:
            self._start(cursor)
            upto = self.last_id
            cursor.execute(
                f"SELECT id, tenant, instance, at, payload FROM op_events WHERE id <= {m} AND type = 'COST' AND at >= {m}",
                [upto, database.bind_at(day_start, self.dialect)],
            )
            day_totals: dict[tuple[str, str, dt.date], int] = {}
            for row_id, tenant, name, at, payload in cursor.fetchall():
                self._saw(row_id)
                when = database.parse_at(at).date()
                ident = (tenant, name, when)
                day_totals[ident] = day_totals.get(ident, 0) + _amount(payload)[0]
            cursor.execute(
                f"SELECT id, tenant, instance, call_key, at FROM op_events WHERE id <= {m} AND type = 'DECISION' AND at >= {m}",
                [upto, database.bind_at(since, self.dialect)],
            )
            calls: dict[tuple[str, str, str], list[float]] = {}
            for row_id, tenant, name, key, at in cursor.fetchall():
                self._saw(row_id)
                if key is not None:
                    calls.setdefault((tenant, name, key), []).append(database.parse_at(at).timestamp())
            for times in calls.values():
                times.sort()
            fresh = sorted((times[-1], call) for call, times in calls.items())
            found = {call: times[0] if len(times) == 1 else times for call, times in calls.items()}
            self._day, self._calls, self._runs = day_totals, found, {}
            self._expiry = collections.deque(fresh)
            self._all = (day, since.timestamp())
            self._horizon = horizon

    def load_run(self, connection: sa.Connection, tenant: str, instance: str, run_id: str) -> None:
        """Sum a run's COST events up to the tail's position; later ones come from the tail."""
        cursor = database.driver_cursor(connection)
        m = self._mark
        with self._lock:
            if (tenant, instance, run_id) in self._runs:
                return
            self._start(cursor)
            cursor.execute(
                f"SELECT id, payload FROM op_events WHERE tenant = {m} AND instance = {m} AND type = 'COST' AND id <= {m}",
                [tenant, instance, self.last_id],
            )
            total = 0
            for row_id, payload in cursor.fetchall():
                self._saw(row_id)
                amount, run = _amount(payload)
                if run == run_id:
                    total += amount
            self._runs[(tenant, instance, run_id)] = total

    # ---------------------------------------------------------------- keeping current

    def add_decisions(self, ids: Iterable[int], rows: Iterable[tuple[str, str, str | None, float]]) -> None:
        """This process committed these DECISION rows ((tenant, instance, call key, at timestamp))."""
        with self._lock:
            if self._all is None:
                return  # not seeded: the ledger answers nothing yet, and its seed reads these rows
            for tenant, instance, key, moment in rows:
                if key is None:
                    continue
                call = (tenant, instance, key)
                self._call_at(call, moment)
            self._mine(ids)

    def _start(self, cursor: Any) -> None:
        """Where the tail starts: the newest id when the ledger first reads (its lock held)."""
        if self.last_id is None:
            cursor.execute(self._max_sql)
            self.last_id = int(cursor.fetchone()[0])

    def _call_at(self, call: tuple[str, str, str], moment: float) -> None:
        times = self._calls.get(call)
        if times is None:
            self._calls[call] = moment
        elif not isinstance(times, list):
            self._calls[call] = [times, moment] if times <= moment else [moment, times]
        elif times[-1] > moment:
            bisect.insort(times, moment)
        else:
            times.append(moment)
        self._expiry.append((moment, call))

    def _saw(self, row_id: int) -> None:
        # PostgreSQL: a row a seed or run query took in is not taken in again when the tail
        # re-reads the slack below its position.
        if self._slack and self.last_id is not None and row_id > self.last_id - self._slack:
            self._seen.add(row_id)

    def _mine(self, ids: Iterable[int]) -> None:
        if self.last_id is None:
            return
        own = self._own
        own.update(i for i in ids if i > self.last_id)
        # Ids right after the tail's position are ours: step over them without reading them back.
        while self.last_id + 1 in own:
            self.last_id += 1
            own.discard(self.last_id)
            if self._slack:
                self._seen.add(self.last_id)

    def tail(self, cursor: Any) -> int:
        """Take in rows other processes committed since the last call; returns how many."""
        with self._lock:
            if self.last_id is None:
                return 0
            start = self.last_id - self._slack
            cursor.execute(self._tail_sql, [start])
            rows = cursor.fetchall()
            taken = 0
            seen, own = self._seen, self._own
            for ident, kind, tenant, instance, at, key, payload in rows:
                if ident in own:
                    own.discard(ident)
                    if self._slack:
                        seen.add(ident)
                    continue
                if self._slack:
                    if ident in seen:
                        continue
                    seen.add(ident)
                elif ident <= self.last_id:
                    continue
                taken += 1
                self._take(kind, tenant, instance, at, key, payload)
            if rows:
                self.last_id = max(self.last_id, rows[-1][0])
            if self._slack:
                floor = self.last_id - self._slack
                if len(seen) > 4 * self._slack:
                    self._seen = {i for i in seen if i > floor}
                self._own = {i for i in own if i > floor} if len(own) > 4 * self._slack else own
            return taken

    def _take(self, kind: str, tenant: str, instance: str, at: Any, key: str | None, payload: Any) -> None:
        seed = self._all
        when = database.parse_at(at)
        if kind == "DECISION":
            if seed is None or key is None:
                return
            self._call_at((tenant, instance, key), when.timestamp())
            return
        amount, run = _amount(payload)
        if seed is not None:
            ident = (tenant, instance, when.date())
            self._day[ident] = self._day.get(ident, 0) + amount
        if run is not None and (tenant, instance, run) in self._runs:
            self._runs[(tenant, instance, run)] += amount

    def prune(self, now: dt.datetime) -> None:
        """Forget decisions older than the horizon and cost of days before today."""
        cutoff = now.timestamp() - self._horizon
        today = now.date()
        with self._lock:
            self.pruned_at = now.timestamp()
            expiry = self._expiry
            while expiry and expiry[0][0] < cutoff:
                _, call = expiry.popleft()
                times = self._calls.get(call)
                if times is None:
                    continue
                if not isinstance(times, list):
                    if times < cutoff:
                        del self._calls[call]
                elif times[-1] < cutoff:
                    del self._calls[call]
                elif times[0] < cutoff:
                    del times[: bisect.bisect_left(times, cutoff)]
                    if len(times) == 1:
                        self._calls[call] = times[0]
            if self._all is not None:
                if today > self._all[0]:  # a new day: yesterday's costs go (once, not every prune)
                    for past in [k for k in self._day if k[2] < today]:
                        del self._day[past]
                self._all = (max(self._all[0], today), max(self._all[1], cutoff))
