"""The decision writer on a real SQLite database: its WAL stays bounded, and a bug stops it closed."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler import errors, metrics
from reconciler.decisions import ledger as ledger_
from reconciler.decisions import recording
from reconciler.state import database, tables


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[sa.Engine]:
    # SQLite on purpose: the WAL and the writer's in-loop commits are SQLite's.
    engine = database.connect(f"sqlite:///{tmp_path / 'arm.db'}")
    database.migrate(engine)
    yield engine
    engine.dispose()


def _writer(db: sa.Engine, book: ledger_.Ledger, **options: float) -> recording.Writer:
    timer = metrics.Histogram("arm_test_write_seconds", "test")
    return recording.Writer(db, book, lambda: dt.datetime.now(dt.UTC), timer, **options)  # type: ignore[arg-type]


def _pending(n: int) -> recording.Pending:
    return recording.Pending("acme", "acme:i-1", dt.datetime.now(dt.UTC), {"n": n}, f"key-{n}", None, "crm.lookup", [])


def _stored(db: sa.Engine) -> int:
    with db.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(tables.op_events)).scalar_one())


def test_under_a_steady_stream_of_commits_the_wal_stays_bounded(sqlite_db: sa.Engine) -> None:
    # What bounds the WAL does not depend on syncing: commits that skip the sync (NORMAL) and are
    # made in the loop come fast enough to grow the WAL past any bound in the test's 2 s.
    sqlite_db.dispose()
    sa.event.listen(sqlite_db, "connect", lambda raw, _: raw.execute("PRAGMA synchronous=NORMAL"))
    writer = _writer(sqlite_db, ledger_.Ledger("sqlite"), checkpoint_seconds=0.05, wal_restart_frames=256, inline=True)
    wal = Path(f"{sqlite_db.url.database}-wal")

    async def stream(seconds: float) -> int:
        # Committed in the event loop one after another while the writer thread checkpoints: a
        # commit lands during every checkpoint, so a PASSIVE checkpoint alone never lets the WAL
        # start over.
        loop, n, until = asyncio.get_running_loop(), 0, time.monotonic() + seconds
        while time.monotonic() < until:
            future: asyncio.Future[int | None] = loop.create_future()
            item = _pending(n)
            item.loop, item.done = loop, lambda stored, f=future: f.set_result(stored.decision_id)
            writer.submit_soon(item)
            assert await future is not None
            n += 1
        return n

    try:
        made = asyncio.run(stream(2.0))
    finally:
        writer.close()
    assert _stored(sqlite_db) == made
    # Every decision wrote at least one 4 KiB page to the WAL: unbounded, it would hold them all
    # (measured: ~130 MB after these 2 s); started over, it holds what came since the last restart.
    written = made * 4096
    assert written > 8 * 2**20, f"too few decisions ({made}) to tell a bounded WAL from an unbounded one"
    assert wal.stat().st_size < written / 2


class _BrokenLedger(ledger_.Ledger):
    """A fault injected past the store: no real part can be made to have a bug on demand."""

    def add_decisions(self, *_: object) -> None:
        raise RuntimeError("a bug past the store")


def test_a_bug_stops_the_writer_closed_and_leaves_nobody_waiting(sqlite_db: sa.Engine) -> None:
    hooked: list[threading.ExceptHookArgs] = []  # where the dead thread's exception is reported
    previous, threading.excepthook = threading.excepthook, hooked.append
    writer = _writer(sqlite_db, _BrokenLedger("sqlite"))
    try:
        # The batch was stored before the bug: its caller gets its id.
        assert writer.wait(_pending(1)) == 1
        deadline = time.monotonic() + 5
        while not hooked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [str(h.exc_value) for h in hooked] == ["a bug past the store"]
        # What comes next is refused with a clear error (the server answers 503), not left waiting.
        with pytest.raises(errors.StoreError, match="the decision writer is stopped; nothing was decided"):
            writer.wait(_pending(2))
    finally:
        threading.excepthook = previous
        writer.close()
    assert _stored(sqlite_db) == 1


def test_closing_stores_what_the_event_loop_queued_and_had_not_committed_yet(sqlite_db: sa.Engine) -> None:
    # A shutdown can close the writer in the same turn of the loop as a decision arrived (its
    # caller gone, so nothing waits on its connection): the loop's commit has not run yet.
    writer = _writer(sqlite_db, ledger_.Ledger("sqlite"))
    answered: list[int | None] = []

    async def arrive_and_close() -> list[recording.Pending]:
        loop = asyncio.get_running_loop()
        items = [_pending(n) for n in range(3)]
        for item in items:
            item.loop, item.done = loop, lambda stored: answered.append(stored.decision_id)
            writer.submit_soon(item)
        writer.close()  # before the loop's next turn
        assert _stored(sqlite_db) == 3  # close returns once everything queued is stored
        deadline = time.monotonic() + 10
        while len(answered) < len(items):  # the thread's answers arrive through the loop
            assert time.monotonic() < deadline, "the answers of a closed writer never arrived"
            await asyncio.sleep(0.005)
        return items

    items = asyncio.run(arrive_and_close())
    assert _stored(sqlite_db) == 3
    assert all(item.decision_id is not None for item in items)
    assert sorted(answered) == sorted(item.decision_id for item in items)  # type: ignore[type-var]


def test_closing_from_another_thread_while_the_loop_stores_keeps_every_decision_once(sqlite_db: sa.Engine) -> None:
    # The application's shutdown closes the writer in a worker thread while the event loop may
    # still be handing it decisions: each one is stored exactly once and answered exactly once
    # (with its id, or with an error if it came after the close).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches as often as they can be made: the race is wide open
    try:
        for trial in range(60):
            _stream_while_closing(sqlite_db, f"acme:trial-{trial}")
    finally:
        sys.setswitchinterval(switch)


def _stream_while_closing(db: sa.Engine, instance: str) -> None:
    writer = _writer(db, ledger_.Ledger("sqlite"))
    answers: dict[int, list[int | None]] = {}

    def answered(n: int, decision_id: int | None) -> None:
        answers.setdefault(n, []).append(decision_id)

    async def stream() -> int:
        loop = asyncio.get_running_loop()
        closing = asyncio.ensure_future(asyncio.to_thread(writer.close))
        n = 0
        while not closing.done():
            item = recording.Pending("acme", instance, dt.datetime.now(dt.UTC), {"n": n}, f"key-{n}", None, "crm.lookup", [])
            item.loop, item.done = loop, lambda stored, n=n: answered(n, stored.decision_id)
            try:
                writer.submit_soon(item)
            except errors.StoreError:
                answered(n, None)
            n += 1
            await asyncio.sleep(0)
        await closing
        deadline = time.monotonic() + 10
        while len(answers) < n:  # answers the thread sent through the loop
            assert time.monotonic() < deadline, f"{instance}: a decision was never answered"
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.02)  # a second answer to the same decision would come by now
        return n

    made = asyncio.run(stream())
    assert sorted(answers) == list(range(made)), f"{instance}: a decision was never answered"
    assert all(len(given) == 1 for given in answers.values()), f"{instance}: a decision was answered twice"
    e = tables.op_events.c
    with db.connect() as connection:
        rows = connection.execute(sa.select(e.id, e.payload).where(e.instance == instance)).all()
    assert sorted(r.id for r in rows) == sorted(i for (i,) in answers.values() if i is not None), instance
    assert len({r.payload["n"] for r in rows}) == len(rows), f"{instance}: a decision was stored twice"


def _in_loop(item: recording.Pending, loop: asyncio.AbstractEventLoop, answered: list[int | None]) -> recording.Pending:
    item.loop, item.done = loop, lambda stored: answered.append(stored.decision_id)
    return item


def test_a_lone_decision_is_stored_and_answered_at_the_loops_next_turn(sqlite_db: sa.Engine) -> None:
    # One runtime calling: its batch never grows, so it waits for no further turn of the loop.
    writer = _writer(sqlite_db, ledger_.Ledger("sqlite"), gather_seconds=10.0, inline=True)
    answered: list[int | None] = []

    async def one() -> None:
        writer.submit_soon(_in_loop(_pending(1), asyncio.get_running_loop(), answered))
        await asyncio.sleep(0)
        assert answered == [1]

    try:
        asyncio.run(one())
    finally:
        writer.close()


def test_decisions_arriving_while_a_batch_grows_join_its_commit(sqlite_db: sa.Engine) -> None:
    # As in the server with several connections busy: two requests decided in one turn of the
    # loop, and one more whose request was read at the next turn's poll. The batch grew after
    # its callback was scheduled, so it waits that turn and the late one commits with it,
    # instead of waiting for a commit of its own.
    writer = _writer(sqlite_db, ledger_.Ledger("sqlite"), gather_seconds=10.0, inline=True)
    answered: list[int | None] = []

    async def arrive() -> None:
        loop = asyncio.get_running_loop()
        writer.submit_soon(_in_loop(_pending(1), loop, answered))
        writer.submit_soon(_in_loop(_pending(2), loop, answered))
        loop.call_soon(writer.submit_soon, _in_loop(_pending(3), loop, answered))  # the next turn
        for _ in range(10):
            await asyncio.sleep(0)
        assert sorted(answered) == [1, 2, 3]  # type: ignore[type-var]

    try:
        asyncio.run(arrive())
        assert writer.timer.count == 1  # one commit for the three
    finally:
        writer.close()


def test_a_batch_that_never_stops_growing_is_stored_when_its_wait_is_up(sqlite_db: sa.Engine) -> None:
    # A new decision at every turn of the loop: the batch would grow for ever (or to max_batch,
    # set out of reach here) if only growth counted. It is stored gather_seconds after it first
    # waited, and the next one after it.
    writer = _writer(sqlite_db, ledger_.Ledger("sqlite"), gather_seconds=0.02, max_batch=10**9)
    answered: list[int | None] = []
    # No wall-clock bound (the host may be busy): the stream never pauses, so were growth all that
    # counted, nothing would be stored until it ended. It goes on until batches were stored while
    # it ran; the deadline only ends a test that would otherwise never finish.
    deadline_seconds = 60.0

    async def stream() -> int:
        loop, n, started = asyncio.get_running_loop(), 0, time.monotonic()
        while writer.timer.count <= 5:
            assert time.monotonic() - started < deadline_seconds, "nothing was stored while decisions kept coming"
            for _ in range(2):  # more than the batch held when its callback last looked
                writer.submit_soon(_in_loop(_pending(n), loop, answered))
                n += 1
            await asyncio.sleep(0)
        return n

    try:
        submitted = asyncio.run(stream())
    finally:
        writer.close()
    assert 0 < len(answered) <= submitted  # answered while the stream still ran, not at its end
    assert writer.timer.count > 5  # stored batch after batch, not once at the end
