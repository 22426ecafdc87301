"""Locks that need the database's own help: leadership of the daemon, and transaction locks.

Every dialect branch about locking lives here. Transaction locks (:func:`lock_in_transaction`,
:func:`lock_with_cursor`) serialise writers that would otherwise collide on PostgreSQL (two
appends to one tenant's change-record chain, two uses of one tool-call approval); on SQLite a
writer holds the database's write lock for its whole transaction, so they are no-ops there.

Leadership: which daemon applies commits and runs the maintenance jobs; waking the leader.

Every replica serves decisions; exactly one reconciles. On PostgreSQL the leader holds a
session-level advisory lock on a connection of its own: when its process dies, PostgreSQL
closes the session and frees the lock, and a follower takes it on its next poll (within one
poll interval). On SQLite there is one writer per file anyway, so a second daemon on the same
database is refused at start with a message naming the holder, through an exclusive ``flock``
on a file next to the database (freed by the kernel when the holder dies).

A webhook may reach any replica (a load balancer picks one), but only the leader applies: on
PostgreSQL the replica that got it also sends ``NOTIFY arm_refresh``, and every replica listens
(``listen``) and polls at once when told.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler import errors

__all__ = ["AdvisoryLock", "FileLock", "Leadership", "for_database", "lock_in_transaction", "lock_with_cursor"]

log = logging.getLogger(__name__)

#: What the leader's advisory lock is named after. Advisory locks belong to the whole database,
#: not to a schema: every lock's key is hashed from its name and the session's current schema, so
#: two installations in two schemas of one database never block or lead each other.
LEADER = "arm-reconciler/leader"
#: A lock's 64-bit key, computed by PostgreSQL from the current schema and the lock's name.
_KEY = "hashtextextended(current_schema() || '/' || {name}, 0)"
#: The notification channel a replica that got a webhook uses to wake the others.
CHANNEL = "arm_refresh"


def lock_in_transaction(connection: sa.Connection, name: str) -> None:
    """Hold the lock ``name`` until ``connection``'s transaction ends (PostgreSQL; SQLite: nothing)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_KEY.format(name=':name')})"), {"name": name})


def lock_with_cursor(cursor: Any, dialect: str, name: str) -> None:
    """:func:`lock_in_transaction` through a DB-API cursor (for the bulk writers' raw SQL)."""
    if dialect == "postgresql":
        cursor.execute(f"SELECT pg_advisory_xact_lock({_KEY.format(name='%s')})", [name])


class Leadership:
    """Try to lead; keep leading; let go."""

    def acquire(self) -> bool:
        """True when this process leads (after this call)."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    @property
    def leading(self) -> bool:
        raise NotImplementedError

    def notify(self) -> None:
        """Wake the other replicas' ``listen`` (a webhook arrived here); nothing to do alone."""

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        """Call ``wake`` whenever another replica ``notify``s, until ``stop`` is set; alone: return."""


class AdvisoryLock(Leadership):
    """``pg_try_advisory_lock`` on a dedicated connection, checked on every acquire."""

    def __init__(self, db: sa.Engine, name: str = LEADER) -> None:
        self.db = db
        self.name = name
        self.key: int | None = None  # computed once the lock's session is open
        self._connection: sa.Connection | None = None
        self._leading = False
        # The jobs call acquire from their own threads: two of them opening a connection each
        # after a lost session could leave the lock held by a connection nobody knows.
        self._mutex = threading.RLock()

    @property
    def leading(self) -> bool:
        return self._leading

    def acquire(self) -> bool:
        with self._mutex:
            return self._acquire()

    def _acquire(self) -> bool:
        try:
            if self._connection is None:
                self._connection = self.db.connect()
                self.key = int(
                    self._connection.execute(sa.text(f"SELECT {_KEY.format(name=':n')}"), {"n": self.name}).scalar_one()
                )
                # The session must stay idle, not "idle in transaction": commit the implicit BEGIN.
                self._connection.commit()
            if self._leading:
                self._connection.execute(sa.text("SELECT 1")).scalar()
                self._connection.commit()
                return True
            got = bool(self._connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            self._connection.commit()
        except sa.exc.DBAPIError as exc:
            # The session is gone, and the lock with it: another replica may lead by now.
            if self._leading:
                log.warning("lost leadership: the lock session failed: %s", exc.orig or exc)
            self._drop()
            return False
        if got and not self._leading:
            log.info("leading: holding the advisory lock")
        self._leading = got
        return got

    def release(self) -> None:
        with self._mutex:
            self._release()

    def _release(self) -> None:
        if self._connection is not None and self._leading:
            try:
                self._connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._connection.commit()
            except sa.exc.DBAPIError:
                pass  # closing the session below frees it anyway
        self._drop()

    def notify(self) -> None:
        try:
            with self.db.begin() as connection:
                # The payload names the schema: replicas of another installation ignore it.
                connection.execute(sa.text("SELECT pg_notify(:channel, current_schema())"), {"channel": CHANNEL})
        except sa.exc.DBAPIError as exc:
            log.warning("cannot tell the other replicas to refresh: %s", exc.orig or exc)

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                raw = self.db.raw_connection()
            except sa.exc.DBAPIError as exc:
                log.warning("cannot listen for refresh notifications: %s", exc.orig or exc)
                stop.wait(5)
                continue
            try:
                driver = raw.driver_connection
                assert driver is not None
                driver.autocommit = True  # type: ignore[attr-defined]
                schema = driver.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[attr-defined]
                driver.execute(f"LISTEN {CHANNEL}")  # type: ignore[attr-defined]
                while not stop.is_set():
                    # Wakes at least every second to notice ``stop``.
                    for note in driver.notifies(timeout=1.0):  # type: ignore[attr-defined]
                        if note.payload == schema:
                            wake()
            except (sa.exc.SQLAlchemyError, self.db.dialect.loaded_dbapi.Error) as exc:  # listen again after a pause
                log.warning("refresh notifications stopped, listening again: %s", exc)
                stop.wait(1)
            finally:
                # Not back to the pool: it is in autocommit and still listening.
                raw.invalidate()
                raw.close()

    def _drop(self) -> None:
        with self._mutex:
            self._leading = False
            if self._connection is not None:
                try:
                    self._connection.invalidate()
                    self._connection.close()
                except sa.exc.DBAPIError:
                    pass
                self._connection = None


class FileLock(Leadership):
    """An exclusive ``flock`` next to a SQLite database: taken at start or refused."""

    def __init__(self, database_file: Path) -> None:
        self.database_file = database_file
        self.path = database_file.with_name(database_file.name + ".daemon.lock")
        self._fd: int | None = None

    @property
    def leading(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise errors.ConfigError(
                f"another 'armctl run' (pid {holder}) already runs on {self.database_file}; "
                "on SQLite only one daemon may use a database: stop it, or use PostgreSQL (ARM_DATABASE_URL) for replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def for_database(db: sa.Engine) -> Leadership:
    """Advisory-lock leadership on PostgreSQL, a start-up file lock on SQLite."""
    if db.dialect.name == "postgresql":
        return AdvisoryLock(db)
    if db.dialect.name == "sqlite":
        name = db.url.database
        if not name or name == ":memory:":
            raise errors.ConfigError("armctl run needs a database file or PostgreSQL, not an in-memory SQLite database")
        return FileLock(Path(name).resolve())
    raise errors.ConfigError(f"armctl run supports SQLite and PostgreSQL, not {db.dialect.name}")
