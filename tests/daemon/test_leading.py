"""Leadership on PostgreSQL: the advisory lock survives a lost session and racing jobs; the
refresh listener leaves no autocommit connection behind."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from reconciler.state import locking
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _concurrently(lock: locking.AdvisoryLock, n: int = 5) -> list[bool]:
    barrier = threading.Barrier(n)
    out: list[bool] = []

    def job() -> None:
        barrier.wait()
        out.append(lock.acquire())

    threads = [threading.Thread(target=job) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_after_the_lock_session_dies_racing_jobs_leave_exactly_one_leader(db_url: str) -> None:
    admin = sa.create_engine(POSTGRES_URL)
    db = sa.create_engine(db_url, pool_size=10)
    other = locking.AdvisoryLock(sa.create_engine(db_url))
    lock = locking.AdvisoryLock(db)
    try:
        assert lock.acquire()
        assert lock._connection is not None
        pid = lock._connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        lock._connection.commit()
        with admin.begin() as connection:  # the session holding the lock is killed
            connection.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        noticed = _concurrently(lock)  # one job notices the loss; the next ones take the lock again
        assert noticed[0] is False and lock.leading
        for _ in range(3):  # jobs racing for it never leave it with a connection nobody knows
            _concurrently(lock)
            assert lock.acquire() and lock.leading
            assert not other.acquire()
        lock.release()
        assert other.acquire()  # released for real: another replica can lead
    finally:
        lock.release()
        other.release()
        db.dispose()
        admin.dispose()


def test_a_transaction_after_the_listener_stops_is_still_atomic(db_url: str) -> None:
    app = f"arm-listener-{uuid.uuid4().hex[:8]}"  # its own name: other test workers listen too
    db = sa.create_engine(f"{db_url}&application_name={app}", pool_size=1, max_overflow=0)
    table = f"t_{uuid.uuid4().hex[:8]}"
    with db.begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE {table} (x int)"))
    try:
        stop = threading.Event()
        listener = threading.Thread(target=locking.AdvisoryLock(db).listen, args=(lambda: None, stop))
        listener.start()
        watcher = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
        deadline = time.monotonic() + 30
        try:
            while True:  # until the listener's connection is listening
                with watcher.connect() as connection:
                    query = "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN arm_refresh' AND application_name = :app"
                    if connection.execute(sa.text(query), {"app": app}).scalar():
                        break
                assert time.monotonic() < deadline, "the listener never started listening"
                time.sleep(0.02)
        finally:
            watcher.dispose()
        stop.set()
        listener.join()
        with pytest.raises(RuntimeError), db.begin() as connection:
            connection.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
            raise RuntimeError("fails half-way")
        with db.connect() as connection:
            assert connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0
    finally:
        with db.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE {table}"))
        db.dispose()


def test_installations_in_two_schemas_of_one_database_each_have_their_leader(db_url: str) -> None:
    """Advisory locks belong to the database: keyed by schema, neither blocks the other's leader."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    here, there = sa.create_engine(db_url), sa.create_engine(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    first, second, rival = locking.AdvisoryLock(here), locking.AdvisoryLock(there), locking.AdvisoryLock(here)
    try:
        assert first.acquire() and second.acquire()
        assert not rival.acquire()  # within one schema, still one leader
        assert first.key != second.key
        # A webhook's wake-up reaches the replicas of its own installation only.
        woken, stop = threading.Event(), threading.Event()
        listener = threading.Thread(target=first.listen, args=(woken.set, stop))
        listener.start()
        try:
            deadline = time.monotonic() + 10
            while not woken.is_set():  # until the listener listens: its own schema's notify wakes it
                assert time.monotonic() < deadline, "a notify of its own schema never woke the listener"
                second.notify()
                first.notify()
                woken.wait(0.2)
            woken.clear()
            for _ in range(3):
                second.notify()
            assert not woken.wait(1.5)
        finally:
            stop.set()
            listener.join()
    finally:
        for lock in (first, second, rival):
            lock.release()
        here.dispose()
        there.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
