"""The change-record chain's verification on SQLite and PostgreSQL: records of every shape (floats,
text outside ASCII, control characters, no operator, stored JSON that is not canonical) verify;
an altered record, a removed one and a broken link are each named, with the record's id, the
same on both stores."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from reconciler.audit import chain, verifying
from reconciler.state import database, tables

AT = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    made = database.connect(db_url)
    database.migrate(made)
    records = []
    for n in range(1, 9):
        for tenant in ("acme", "zeta"):
            records.append(
                chain.Record(
                    tenant,
                    "POLICY_EVALUATED",
                    "Instance",
                    f"{tenant}:agent-{n}\u00e9" + ("\n\t\x01" if n == 4 else ""),
                    before={"n": n} if n % 2 else None,
                    after={"decision": "DENY", "score": n / 3, "note": "naïve \u2028 “quoted”", "big": 2**60, "ok": n == 2},
                    sha="a" * 40 if n % 3 else None,
                    author="Zoë Ölund <z@example.com>",
                    operator="maya" if n == 5 else None,
                )
            )
    with database.transaction(made) as connection:
        built = chain.Chain({})
        for n, record in enumerate(records):
            built.add(record, AT + dt.timedelta(seconds=n, microseconds=n * 7))
        built.write(connection)
    try:
        yield made
    finally:
        made.dispose()


def _breaks(engine: sa.Engine) -> list[tuple[str, int, int, str]]:
    with database.reading(engine) as connection:
        found = [(b.tenant, b.seq, b.id, b.reason) for b in chain.verify(connection)]
        # Every way of verifying names the same breaks: the general one, and on SQLite the
        # chains cut into stretches verified in worker processes.
        assert [(b.tenant, b.seq, b.id, b.reason) for b in chain.verify_generic(connection)] == found
        if connection.dialect.name == "sqlite":
            assert [(b.tenant, b.seq, b.id, b.reason) for b in verifying.verify_sqlite(connection, workers=2)] == found
        return found


def _id(engine: sa.Engine, tenant: str, seq: int) -> int:
    r = tables.change_records.c
    with engine.connect() as connection:
        return int(connection.execute(sa.select(r.id).where(r.tenant == tenant, r.seq == seq)).scalar_one())


def test_every_shape_of_record_verifies_and_each_kind_of_break_is_named(engine: sa.Engine) -> None:
    assert _breaks(engine) == []
    r = tables.change_records
    with engine.begin() as connection:
        # Stored JSON that means the same but is not written canonically (keys unsorted) still
        # verifies: the hash covers its meaning.
        connection.execute(r.update().where(r.c.tenant == "zeta", r.c.seq == 6).values(before={"z": 1, "a": [1.5, "x"]}))
    _rehash_from(engine, "zeta", 6)
    assert _breaks(engine) == []

    with engine.begin() as connection:
        connection.execute(r.update().where(r.c.tenant == "acme", r.c.seq == 3).values(after={"decision": "ALLOW"}))
        connection.execute(r.update().where(r.c.tenant == "acme", r.c.seq == 6).values(prev_hash="sha256:" + "1" * 64))
        connection.execute(r.delete().where(r.c.tenant == "zeta", r.c.seq == 2))  # removed
    assert _breaks(engine) == [
        ("acme", 3, _id(engine, "acme", 3), "hash does not match the record's content (altered)"),
        ("acme", 6, _id(engine, "acme", 6), "prev_hash does not link to the record before it"),
        ("zeta", 3, _id(engine, "zeta", 3), "sequence jumps from 1 to 3 (records missing)"),
    ]


def _rehash_from(engine: sa.Engine, tenant: str, seq: int) -> None:
    r = tables.change_records
    with engine.begin() as connection:
        rows = [dict(x) for x in connection.execute(sa.select(r).where(r.c.tenant == tenant).order_by(r.c.seq)).mappings()]
        previous = chain.GENESIS_HASH
        for row in rows:
            if row["seq"] >= seq:
                row["prev_hash"] = previous
                row["hash"] = chain.record_hash(previous, row)
                connection.execute(r.update().where(r.c.id == row["id"]).values(prev_hash=row["prev_hash"], hash=row["hash"]))
            previous = row["hash"]
