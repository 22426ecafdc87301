"""Recording decisions: one writer thread, group commit, nothing answered before it is stored.

:class:`Writer` owns one database connection and a queue. Callers (the server's event loop,
worker threads) enqueue :class:`Pending` decisions; the writer takes everything queued (up to
``max_batch``) and stores it in one transaction through the DB-API cursor: ids taken up front,
one ``executemany`` (``state.opevents.insert_decisions``), payloads encoded with orjson. A batch
holding a DENY also appends its change records (``audit.chain``) in the same transaction. Only
after the commit does it feed the ledger (``decisions.ledger``), let the calls leave the in-flight
count and answer: a waiting thread through its ``concurrent.futures.Future``, an event loop with
one ``call_soon_threadsafe`` per batch. If the batch fails it retries each decision alone, so one
bad row fails only its own caller, who gets the error instead of an answer.

Between batches (at most every ``idle_seconds``) the writer calls ``after`` with its connection:
the decider re-reads the fleet's state row and tails op events there. ``decisions.deciding``
builds the pending decisions and owns the writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler import errors, metrics
from reconciler.audit import chain
from reconciler.decisions import ledger as ledger_
from reconciler.state import database, opevents

__all__ = ["Pending", "Writer", "not_recorded", "store", "store_raw"]

log = logging.getLogger(__name__)

#: SQLite: how often the writer thread copies the WAL back into the database file.
CHECKPOINT_SECONDS = 0.2

#: SQLite: past this many WAL frames (4 KiB pages) a checkpoint makes the WAL start over.
WAL_RESTART_FRAMES = 8192

#: SQLite: how long that checkpoint waits for readers before it tries again later.
WAL_RESTART_WAIT_MS = 20

#: In the event loop: how long a batch still growing may wait for one more turn of the loop.
GATHER_SECONDS = 0.0005


@dataclasses.dataclass(slots=True, eq=False)
class Pending:
    """A decision to store: its op event, its DENY record and who waits for its id."""

    tenant: str
    instance: str
    at: dt.datetime
    payload: dict[str, Any]
    key: str
    deny: str | None  # the change record type when the decision is a DENY of a known instance
    tool: str
    reasons: list[str]
    release: Callable[[], None] | None = None  # leaves the in-flight count, once stored (or not)
    waiter: concurrent.futures.Future[int] | None = None  # a thread waits on this
    loop: asyncio.AbstractEventLoop | None = None  # or an event loop is told through ``done``
    done: Callable[[Pending], None] | None = None
    decision_id: int | None = None
    error: BaseException | None = None
    subject: str | None = None  # what the change record names the instance by, when not its id

    def row(self) -> tuple[str, dt.datetime, str, str, str]:
        return self.tenant, self.at, self.instance, orjson.dumps(self.payload, option=orjson.OPT_NON_STR_KEYS).decode(), self.key


def store(connection: sa.Connection, batch: list[Pending], now: dt.datetime) -> list[int]:
    """Insert ``batch`` and its DENY change records in ``connection``'s open transaction; the ids.
    A failure of the store leaves as ``errors.StoreError`` naming no value of the payload."""
    try:
        return store_raw(database.driver_cursor(connection), connection.dialect.name, batch, now)
    except connection.dialect.loaded_dbapi.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise errors.StoreError(f"the decision was not recorded; nothing was decided: {reason}") from exc


def store_raw(cursor: Any, dialect: str, batch: list[Pending], now: dt.datetime) -> list[int]:
    """:func:`store` through a DB-API cursor in an open write transaction."""
    ids = opevents.insert_decisions(cursor, dialect, [p.row() for p in batch])
    records = [
        chain.Record(
            tenant=item.tenant,
            type=item.deny,
            object_kind="Instance",
            object_name=item.subject or item.instance,
            after={"decision": "DENY", "tool": item.tool, "reasons": item.reasons, "decisionId": decision_id},
        )
        for item, decision_id in zip(batch, ids, strict=True)
        if item.deny is not None
    ]
    if records:
        chain.append_raw(cursor, dialect, records, now)
    return ids


class _Link:
    """One database connection of the writer, made on first use and dropped when it broke."""

    def __init__(self, db: sa.Engine, busy_timeout_ms: int | None = None) -> None:
        self.db = db
        self.busy_timeout_ms = busy_timeout_ms
        self.connection: sa.Connection | None = None
        self.raw: Any = None  # its DB-API connection, which the writer uses directly
        self.dialect = db.dialect.name

    def connect(self) -> sa.Connection:
        if self.connection is None:
            connection = self.db.connect()
            if connection.dialect.name == "sqlite":
                cursor = database.driver_cursor(connection)
                # The writer thread checkpoints the WAL (CHECKPOINT_SECONDS): a commit that
                # checkpoints itself pays a file sync, ~1 ms on average under load.
                cursor.execute("PRAGMA wal_autocheckpoint=0")
                if self.busy_timeout_ms is not None:
                    cursor.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            self.connection = connection
            self.raw = connection.connection.driver_connection
        return self.connection

    def drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.invalidate()
                self.connection.close()
            except (sa.exc.SQLAlchemyError, self.db.dialect.loaded_dbapi.Error):
                log.debug("closing a broken connection failed", exc_info=True)
            self.connection = None
            self.raw = None


class Writer:
    """Stores decisions in groups; see the module docstring.

    On SQLite whose commits do not wait for the disk (``synchronous`` below FULL) an event
    loop's decisions are stored in the loop itself (``submit_soon``): the decisions that arrived
    in one turn of the loop commit together in a callback at its next turn, with no thread hop
    and no GIL hand-off — on one core that is the cheapest way. If another process holds the
    write lock, the batch goes to the thread rather than block the loop. Elsewhere — the store's
    own setting, FULL, where each commit syncs the WAL to disk so that an answered decision
    survives power loss, and PostgreSQL, where a commit is a network round trip — the thread
    stores them, and the loop decides the next batch meanwhile.

    A batch that grew after its callback was scheduled waits one more turn of the loop while it
    keeps growing, for at most ``gather_seconds``. The requests whose answers went out last in
    the previous commit reach the server while the loop decides the others; the extra turn (a
    poll that does not block) decides them into this batch rather than leave them waiting for
    the whole next one. With several connections busy, each request then waits about one batch,
    not two; a lone caller's batch never grows and is stored at once.
    """

    def __init__(
        self,
        db: sa.Engine,
        ledger: ledger_.Ledger,
        now: Callable[[], dt.datetime],
        timer: metrics.Histogram,
        after: Callable[[sa.Connection], None] | None = None,
        *,
        max_batch: int = 512,
        idle_seconds: float = 0.05,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        wal_restart_frames: int = WAL_RESTART_FRAMES,
        gather_seconds: float = GATHER_SECONDS,
        inline: bool | None = None,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.now = now
        self.timer = timer
        self.after = after
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self.wal_restart_frames = wal_restart_frames
        self.gather_seconds = gather_seconds
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[Pending] = []
        self._stopping = False
        # What a store failure raises: SQLAlchemy's errors and the driver's own (the writer uses
        # the DB-API connection directly); a row also fails on a payload that cannot be encoded.
        self._store_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, db.dialect.loaded_dbapi.Error)
        self._row_errors = (*self._store_errors, TypeError, ValueError)
        self._link = _Link(db)
        self._last_after = 0.0
        self._last_checkpoint = 0.0
        self._dirty = False
        # In the loop only where a commit does not wait for the disk: with synchronous=FULL (the
        # store's setting, so that an answered decision survives power loss) each commit syncs the
        # WAL, which would stall every request the loop serves; the thread syncs while the loop
        # goes on deciding the next batch. ``inline`` overrides it (tests, measurements).
        self._inline = (db.dialect.name == "sqlite" and _sqlite_synchronous(db) < 2) if inline is None else inline
        self._loop_link = _Link(db, busy_timeout_ms=0) if self._inline else None
        self._soon: list[Pending] = []
        self._soon_seen = 0  # how many of _soon its callback saw the last time it ran
        self._soon_until = 0.0  # when a growing _soon stops waiting for more (0: not growing yet)
        # Guards the loop's batch, its connection and ``_soon_closed`` against close(), which
        # may run on another thread (the application's shutdown closes the decider in a worker
        # thread). Re-entrant: the answers given under it may hand the loop more decisions.
        self._soon_lock = threading.RLock()
        self._soon_closed = False
        #: why the last batch could not be stored (None: it was); /readyz reports it
        self.failing: str | None = None
        self._thread = threading.Thread(target=self._run, name="arm-decision-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Pending) -> None:
        with self._cv:
            if self._stopping:
                if item.release is not None:
                    item.release()
                    item.release = None
                raise errors.StoreError("the decision writer is stopped; nothing was decided")
            self._queue.append(item)
            if len(self._queue) == 1:
                self._cv.notify()

    def submit_soon(self, item: Pending) -> None:
        """Store ``item`` (whose ``loop`` is the running loop) and call its ``done`` there."""
        if self._inline:
            with self._soon_lock:
                if not self._soon_closed and not self._stopping:
                    self._soon.append(item)
                    if len(self._soon) == 1:
                        self._soon_seen, self._soon_until = 1, 0.0
                        item.loop.call_soon(self._flush_soon)  # type: ignore[union-attr]
                    return
        self.submit(item)

    def wait(self, item: Pending) -> int:
        """Submit ``item`` and block until it is stored (its id) or failed (raises)."""
        item.waiter = concurrent.futures.Future()
        self.submit(item)
        return item.waiter.result()

    def close(self) -> None:
        """Store what is queued, then stop the thread and close the connections."""
        with self._soon_lock:  # waits for a batch the loop is storing
            # What the event loop queued for its next turn goes to the thread, which stores
            # everything queued before it stops; the loop stores nothing more.
            self._soon_closed = True
            handed, self._soon = self._soon, []
            with self._cv:
                self._stopping = True
                self._queue.extend(handed)
                self._cv.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._soon_lock:
            if self._loop_link is not None and self._loop_link.connection is not None:
                self._loop_link.connection.close()

    # ---------------------------------------------------------------- in the event loop

    def _flush_soon(self) -> None:
        with self._soon_lock:
            batch = self._soon
            if not batch or self._soon_closed:
                return  # close() took the batch to the thread
            if self._soon_seen < len(batch) < self.max_batch and self._gathering():
                self._soon_seen = len(batch)
                batch[0].loop.call_soon(self._flush_soon)  # type: ignore[union-attr]
                return
            self._soon = []
            link = self._loop_link
            assert link is not None
            lock = database.write_lock(self.db)
            assert not isinstance(lock, contextlib.nullcontext)  # the loop stores only on SQLite
            if not lock.acquire(blocking=False):  # another writer of this process: the thread waits for it
                self._hand_over(batch)
                return
            try:
                try:
                    link.connect()
                    link.raw.execute("BEGIN IMMEDIATE")
                except self._store_errors:
                    log.debug("storing decisions in the event loop failed; the writer thread takes them", exc_info=True)
                    link.drop()
                    self._hand_over(batch)
                    return
                self._commit(batch, link, begun=True)
            finally:
                lock.release()
            if self.after is not None and time.monotonic() - self._last_after >= 0.005:
                self._after(link)

    def _gathering(self) -> bool:
        """Whether the growing batch may wait one more turn of the loop (see the class)."""
        now = time.perf_counter()
        if not self._soon_until:
            self._soon_until = now + self.gather_seconds
        return now < self._soon_until

    def _hand_over(self, batch: list[Pending]) -> None:
        """Give ``batch`` to the thread; if it has stopped (a bug), each caller gets the error."""
        refused = []
        for item in batch:
            try:
                self.submit(item)
            except errors.StoreError as exc:
                item.error = exc
                refused.append(item)
        self._deliver(refused)

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        finished = False
        try:
            self._serve()
            finished = True
        finally:
            if not finished:
                # Store errors are handled batch by batch (the callers get an error); only a bug
                # ends the loop early. Its traceback goes to the thread's excepthook; here nothing
                # queued is left waiting, and what comes next is refused (503, treated as DENY).
                log.critical("the decision writer stopped on an unexpected error; decisions are refused until restart")
                with self._cv:
                    self._stopping = True
                    queued, self._queue = self._queue, []
                for item in queued:
                    item.error = errors.StoreError("the decision writer stopped; nothing was decided")
                self._deliver(queued)
            if self._link.connection is not None:
                self._link.connection.close()

    def _serve(self) -> None:
        while True:
            with self._cv:
                if not self._queue and not self._stopping:
                    self._cv.wait(self.idle_seconds)
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                stopping = self._stopping and not self._queue
            if batch:
                self._commit(batch, self._link)
            if stopping and not batch:
                return
            if self.after is not None and time.monotonic() - self._last_after >= (0.005 if batch else self.idle_seconds):
                self._after(self._link)
            if self._inline and self._dirty and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                self._checkpoint()

    def _checkpoint(self) -> None:
        # In this thread, off the event loop: the file syncs release the GIL. A PASSIVE checkpoint
        # never holds up the loop's commits, but under a steady stream of them it never finishes
        # either (a commit lands while it copies), so the WAL is never started over and grows
        # without end: 3.6 GB after minutes of load, and every commit slower for it. Past
        # WAL_RESTART_FRAMES the checkpoint takes the write lock and finishes, so the next commit
        # writes the WAL from its start again (``journal_size_limit`` then trims the file);
        # meanwhile the loop finds the lock taken and hands its batches to this thread, which
        # stores them right after. It waits for readers only briefly, else tries again later.
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        try:
            cursor = database.driver_cursor(self._link.connect())
            _, frames, _ = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > self.wal_restart_frames:
                cursor.execute(f"PRAGMA busy_timeout={WAL_RESTART_WAIT_MS}")
                try:
                    with database.writing(self.db):  # it blocks writers: they wait on the lock, not in SQLite
                        busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    cursor.execute(f"PRAGMA busy_timeout={database.SQLITE_BUSY_TIMEOUT_MS}")
                if busy:
                    self._dirty = True  # readers held it: again at the next interval
        except self._store_errors:
            log.warning("checkpointing the SQLite WAL failed", exc_info=True)
            self._link.drop()

    def _after(self, link: _Link) -> None:
        self._last_after = time.monotonic()
        try:
            connection = link.connect()
            self.after(connection)  # type: ignore[misc]
            if connection.dialect.name != "sqlite":
                connection.connection.driver_connection.rollback()  # type: ignore[union-attr]  # end the read
        except self._store_errors:
            log.warning("refreshing the decision state failed", exc_info=True)
            link.drop()

    def _commit(self, batch: list[Pending], link: _Link, begun: bool = False) -> None:
        started = time.perf_counter()
        self._dirty = True  # something to checkpoint (SQLite)
        try:
            try:
                ids = self._store(batch, link, begun)
            except self._row_errors:  # one bad decision must not fail the batch: retry one by one
                for item in batch:
                    try:
                        (item.decision_id,) = self._store([item], link)
                    except self._row_errors as exc:  # the caller learns why and answers an error
                        item.error = exc
            else:
                self.timer.observe(time.perf_counter() - started)
                for item, decision_id in zip(batch, ids, strict=True):
                    item.decision_id = decision_id
            stored = [item for item in batch if item.decision_id is not None]
            if stored:
                self.failing = None
            else:
                error = next((item.error for item in batch if item.error is not None), None)
                self.failing = str(not_recorded(error)).splitlines()[0]
            self.ledger.add_decisions(
                [item.decision_id for item in stored],  # type: ignore[misc]
                [(item.tenant, item.instance, item.key, item.at.timestamp()) for item in stored],
            )
        finally:
            # Even if something above was interrupted, nobody waits forever; an item without an
            # id is answered with an error, never with its decision.
            self._deliver(batch)

    def _store(self, batch: list[Pending], link: _Link, begun: bool = False) -> list[int]:
        # No SQLAlchemy transaction: BEGIN, an executemany or two, COMMIT on the driver connection.
        link.connect()
        raw, dialect = link.raw, link.dialect
        now = self.now()
        try:
            if dialect == "sqlite":
                cursor = raw.cursor()
                with database.writing(self.db):  # re-entrant: the loop's flush holds it already
                    if not begun:
                        cursor.execute("BEGIN IMMEDIATE")
                    ids = store_raw(cursor, "sqlite", batch, now)
                    cursor.execute("COMMIT")
            else:
                ids = store_raw(raw.cursor(), dialect, batch, now)
                raw.commit()
        except BaseException as exc:
            try:
                if dialect != "sqlite" or raw.in_transaction:
                    raw.rollback()
            except self._store_errors:
                log.debug("rolling back a failed batch failed", exc_info=True)
            if _broken(exc):
                link.drop()
            raise
        return ids

    def _deliver(self, batch: list[Pending]) -> None:
        loops: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        running = _running_loop()
        for item in batch:
            if item.release is not None:
                item.release()
                item.release = None
            if item.waiter is not None:
                if item.decision_id is None:
                    item.waiter.set_exception(not_recorded(item.error))
                else:
                    item.waiter.set_result(item.decision_id)
            elif item.loop is not None:
                loops.setdefault(item.loop, []).append(item)
        for loop, items in loops.items():
            if loop is running:
                _answer(items)
                continue
            try:
                loop.call_soon_threadsafe(_answer, items)
            except RuntimeError:  # the loop closed: nobody is waiting any more
                log.debug("an event loop closed before its decisions were answered")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def not_recorded(error: BaseException | None) -> errors.StoreError:
    """What the caller of a decision that was not stored gets instead of an answer."""
    if isinstance(error, errors.StoreError):
        return error
    message = "the decision was not recorded; nothing was decided"
    exc = errors.StoreError(f"{message}: {error}" if error is not None else message)
    exc.__cause__ = error
    return exc


def _answer(items: list[Pending]) -> None:
    for item in items:
        if item.done is not None:
            try:
                item.done(item)
            except Exception:  # a bug in one answer must not leave the rest of the batch unanswered
                log.exception("answering a stored decision failed")


def _sqlite_synchronous(db: sa.Engine) -> int:
    """The ``PRAGMA synchronous`` level ``db``'s SQLite connections run with (2: FULL)."""
    with db.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar() or 0)


def _broken(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in ("OperationalError", "InterfaceError") and "locked" not in str(exc)
