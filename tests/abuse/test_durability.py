"""On SQLite a decision's commit is synced to disk before it is answered (issue 15, item 8).

``synchronous=NORMAL`` in WAL mode survives ``kill -9`` but not an OS crash or power loss: the
last commits may be rolled back after they were answered. Every connection the store opens —
the decision writer's included — runs with ``synchronous=FULL``. (Power loss itself cannot be
staged here; what the claim rests on, the setting on the very connections that commit, is
checked on them.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reconciler import errors
from reconciler.decisions import deciding, recording
from reconciler.state import database

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_every_sqlite_connection_and_the_decision_writers_commit_with_synchronous_full(tmp_path: Path) -> None:
    engine = database.connect(f"sqlite:///{tmp_path / 'arm.db'}")
    try:
        database.migrate(engine)
        with database.reading(engine) as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
        decider = deciding.Decider(engine, group_commit=True)
        try:
            writer = decider._writer
            assert isinstance(writer, recording.Writer)
            # A synced commit must not stall the event loop: the writer thread commits, not the loop.
            assert writer._inline is False and writer._loop_link is None
            connection = writer._link.connect()
            assert database.driver_cursor(connection).execute("PRAGMA synchronous").fetchone()[0] == FULL
            answered = decider.decide(deciding.Request("acme:nobody", "crm.lookup"), caller_tenant="acme")
            assert answered.decision == "DENY" and answered.decision_id > 0
        finally:
            decider.close()
    finally:
        engine.dispose()


def test_writers_of_one_process_queue_on_a_lock_that_gives_up_like_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer of this process waits on the lock, not in SQLite's busy handler (which sleeps up
    # to 100 ms between tries), and no longer than the busy timeout: then "database is locked".
    engine = database.connect(f"sqlite:///{tmp_path / 'arm.db'}")
    try:
        database.migrate(engine)
        # The busy timeout (30 s) shortened so the test waits 50 ms for it: a timeout, not a stand-in.
        monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 50)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with database.transaction(engine):
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        with pytest.raises(errors.StoreError, match="database is locked"), database.transaction(engine):
            pass
        release.set()
        holder.join(10)
        with database.transaction(engine) as connection:  # free again
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
