"""Engines, transactions and schema migrations for SQLite (default) and PostgreSQL.

``connect(url)`` makes an engine tuned for the dialect: SQLite in WAL mode with real
``BEGIN IMMEDIATE`` transactions (pysqlite's own transaction handling defers locking and breaks
all-or-nothing applies), PostgreSQL through psycopg 3. JSON goes through orjson. ``migrate``
runs Alembic to the newest revision (``armctl init``); ``require_current`` refuses a database
whose schema is behind, with a message that says what to run.

This module is the store's seam for the rooms above it. ``transaction`` and ``reading`` are how
they open a connection: a failure of the store inside either (unreachable, locked past the busy
timeout, a write refused) leaves as :class:`errors.StoreError`, so the daemon, the server and the
CLI handle the project's own error types only. :data:`Engine` and :data:`Connection` name
SQLAlchemy's types for code that passes them along without importing SQLAlchemy itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import orjson
import sqlalchemy as sa

from reconciler import errors

__all__ = [
    "SCHEMA_HEAD",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_WAL_LIMIT_BYTES",
    "Connection",
    "Engine",
    "RawJSON",
    "bind_at",
    "bulk_insert",
    "connect",
    "driver_cursor",
    "head_revision",
    "migrate",
    "parse_at",
    "placeholder",
    "reading",
    "require_current",
    "schema_revision",
    "store_errors",
    "transaction",
    "write_lock",
    "writing",
]

#: What the rooms above ``state`` hold and pass along, named here so they need no SQLAlchemy import.
Engine: TypeAlias = sa.Engine
Connection: TypeAlias = sa.Connection

#: The newest migration in ``migrations/versions``; kept here so checking a database's schema
#: needs no Alembic import (~0.2 s). A test asserts it equals Alembic's head.
SCHEMA_HEAD = "0017"

#: SQLite: how long a connection waits for another's lock before it reports the store busy.
SQLITE_BUSY_TIMEOUT_MS = 30000

#: SQLite: the size the WAL file is trimmed to when it starts over.
SQLITE_WAL_LIMIT_BYTES = 64 * 2**20

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class RawJSON(str):
    """JSON text that is already encoded: written to a JSON column as it is (no re-encoding)."""

    __slots__ = ()


def _json_dumps(value: Any) -> str:
    if type(value) is RawJSON:
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def connect(url: str) -> sa.Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise errors.ConfigError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise errors.ConfigError(
                    f"cannot create the directory {Path(database).parent} of the SQLite database: {exc.strerror or exc}"
                    " (set --state-dir or ARM_STATE_DIR to a directory you can write, or ARM_DATABASE_URL)"
                ) from exc
        engine = sa.create_engine(
            parsed,
            hide_parameters=True,  # a failed statement's error names no value: payloads may hold secrets
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30, "isolation_level": None, "check_same_thread": False},
        )
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            parsed,
            hide_parameters=True,  # a failed statement's error names no value: payloads may hold secrets
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            pool_pre_ping=True,
            pool_size=10,
        )
    raise errors.ConfigError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_connect(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before it returns, so a decision answered survives power loss
    # (NORMAL in WAL mode may lose the last commits). Group commit keeps the syncs few.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # A WAL that grew in a burst is cut back to this size once it starts over.
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_LIMIT_BYTES}")
    cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    # Writers take the lock at the start so a transaction never fails half-way on SQLITE_BUSY;
    # readers (``reading``) begin deferred and never wait for or block a writer under WAL.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def driver_cursor(connection: sa.Connection) -> Any:
    """A DB-API cursor on ``connection``'s driver connection (in its transaction, if any)."""
    return connection.connection.driver_connection.cursor()  # type: ignore[union-attr]


def placeholder(dialect: str) -> str:
    """The DB-API parameter mark for raw SQL: ``?`` on SQLite, ``%s`` on psycopg."""
    return "?" if dialect == "sqlite" else "%s"


def bind_at(value: dt.datetime, dialect: str) -> Any:
    """A timestamp as a raw DB-API parameter, stored as ``tables.UTCDateTime`` stores it: in
    UTC, on SQLite as ``YYYY-MM-DD HH:MM:SS.ffffff`` text."""
    value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds") if dialect == "sqlite" else value


def parse_at(value: Any) -> dt.datetime:
    """A stored timestamp read through a raw cursor, as an aware UTC datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def write_lock(engine: sa.Engine) -> threading.RLock | contextlib.nullcontext[None]:
    """SQLite: the lock this process's writers of ``engine``'s file take before ``BEGIN
    IMMEDIATE``, so they queue on it and the next one starts the moment the last commits.
    Queued on SQLite's own busy handler instead, a writer sleeps 1, 2, 5, 10 … up to 100 ms
    between tries: a decision would wait tens of milliseconds past a short write of another
    request. Other processes (an ``armctl apply`` beside the server) still meet the busy
    handler. PostgreSQL: nothing to take (row locks, no file lock)."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    key = str(engine.url)
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


@contextlib.contextmanager
def writing(engine: sa.Engine) -> Iterator[None]:
    """Hold :func:`write_lock`, waiting for it at most as long as SQLite's busy timeout; past
    that the driver's own "database is locked" error, as SQLite itself would raise."""
    lock = write_lock(engine)
    if isinstance(lock, contextlib.nullcontext):
        yield
        return
    if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
        raise engine.dialect.loaded_dbapi.OperationalError("database is locked (by another writer of this process)")
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction, committed when the block ends and rolled back when it
    raises; a store failure inside leaves as :class:`errors.StoreError`. On SQLite it holds
    :func:`write_lock` throughout."""
    try:
        with _store_failures(), writing(engine), engine.begin() as connection:
            yield connection
    except engine.dialect.loaded_dbapi.OperationalError as exc:
        raise errors.StoreError(f"the store failed: {exc}") from exc


@contextlib.contextmanager
def reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reads only (on SQLite it does not take the write lock); a store failure
    inside leaves as :class:`errors.StoreError`."""
    with _store_failures(), engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
        yield connection


def store_errors(engine: sa.Engine) -> tuple[type[BaseException], ...]:
    """What a failure of ``engine``'s store raises: SQLAlchemy's errors and its driver's own (for
    code that works on the DB-API connection directly)."""
    return (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error)


@contextlib.contextmanager
def _store_failures() -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise errors.StoreError(f"the store failed: {_reason(exc)}") from exc


def _config(connection: sa.Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration, as Alembic sees it (the migration tooling's view of SCHEMA_HEAD)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def schema_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at; None for an empty database."""
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.OperationalError as exc:
        raise errors.StoreError(f"cannot reach the database: {_reason(exc)}") from exc


def migrate(engine: sa.Engine, target: str = "head") -> tuple[str | None, str]:
    """Create or upgrade the schema; returns (revision before, revision after)."""
    from alembic import command

    before = schema_revision(engine)
    try:
        with engine.begin() as connection:
            command.upgrade(_config(connection), target)
    except sa.exc.OperationalError as exc:
        raise errors.StoreError(f"cannot migrate the database: {_reason(exc)}") from exc
    after = schema_revision(engine)
    assert after is not None
    return before, after


def require_current(engine: sa.Engine) -> None:
    """Refuse a database that is empty or behind this version's schema."""
    current = schema_revision(engine)
    head = SCHEMA_HEAD
    if current == head:
        return
    if current is None:
        raise errors.StoreError(f"the database {_display(engine)} has no schema yet: run 'armctl init'")
    raise errors.StoreError(
        f"the database {_display(engine)} is at schema revision {current}, this armctl needs {head}: run 'armctl init' to upgrade"
    )


def _display(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _reason(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


#: Above this many rows, PostgreSQL inserts go through COPY (measured: ~97,000 rows/s against
#: ~30,000 for executemany).
COPY_FROM_ROWS = 500


def bulk_insert(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in the caller's transaction: COPY on PostgreSQL, executemany elsewhere.

    Rows are plain values as for ``connection.execute(table.insert(), rows)``; every row must
    have the same keys. Column defaults are not applied on the COPY path, so rows carry every
    value they need.
    """
    if not rows:
        return
    if connection.dialect.name != "postgresql" or len(rows) < COPY_FROM_ROWS:
        connection.execute(table.insert(), rows)
        return
    from psycopg.types.json import Jsonb

    columns = list(rows[0])
    json_columns = {
        c.name for c in table.columns if isinstance(c.type, sa.JSON) or isinstance(getattr(c.type, "impl", None), sa.JSON)
    }

    def jsonb(value: Any) -> Any:
        if value is None:
            return None
        return Jsonb(value, dumps=_json_dumps)

    convert = [jsonb if name in json_columns else None for name in columns]
    raw = connection.connection.driver_connection
    assert raw is not None
    names = ", ".join(f'"{name}"' for name in columns)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([f(row[name]) if f else row[name] for f, name in zip(convert, columns, strict=True)])
