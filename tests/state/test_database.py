"""The store's engine set-up and schema bookkeeping."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.state import database, tables


def test_the_schema_head_constant_is_alembics_head() -> None:
    assert database.head_revision() == database.SCHEMA_HEAD


def test_migrate_creates_every_table_and_is_idempotent(db_url: str) -> None:
    engine = database.connect(db_url)
    assert database.migrate(engine) == (None, database.SCHEMA_HEAD)
    assert database.migrate(engine) == (database.SCHEMA_HEAD, database.SCHEMA_HEAD)
    names = set(sa.inspect(engine).get_table_names())
    assert {t.name for t in tables.metadata.sorted_tables} <= names
    database.require_current(engine)


def test_timestamps_come_back_in_utc(db_url: str) -> None:
    engine = database.connect(db_url)
    database.migrate(engine)
    at = dt.datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with engine.begin() as connection:
        connection.execute(tables.op_events.insert(), {"tenant": "t", "at": at, "type": "X", "payload": {"a": [1, 2.5]}})
    with engine.connect() as connection:
        row = connection.execute(sa.select(tables.op_events.c.at, tables.op_events.c.payload)).one()
    assert row.at == at and row.at.tzinfo == dt.UTC
    assert row.payload == {"a": [1, 2.5]}


def test_naive_timestamps_are_refused(tmp_path: object) -> None:
    engine = database.connect(f"sqlite:///{tmp_path}/x.db")
    database.migrate(engine)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as connection:
        connection.execute(tables.op_events.insert(), {"tenant": "t", "at": dt.datetime(2026, 1, 1), "type": "X", "payload": {}})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x@localhost/db", "unsupported database 'mysql'"),
        ("not a url", "invalid database URL 'not a url'"),
    ],
)
def test_unusable_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        database.connect(url)


def test_an_unreachable_postgresql_is_a_store_error() -> None:
    engine = database.connect("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(errors.StoreError, match="cannot reach the database"):
        database.require_current(engine)


def test_the_migrations_build_exactly_the_tables_the_code_declares(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = database.connect(db_url)
    database.migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, tables.metadata)
    assert differences == []


def test_decision_events_are_kept_out_of_the_cost_index(db_url: str) -> None:
    import datetime as dt

    from reconciler.state import opevents

    engine = database.connect(db_url)
    database.migrate(engine)
    indexes = {ix["name"]: ix for ix in sa.inspect(engine).get_indexes("op_events")}
    # Only the time index and the partial COST index: every other index would be written per decision.
    assert set(indexes) == {"ix_op_events_at", "ix_op_events_cost_tenant_instance_at"}
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            definition = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_op_events_cost_tenant_instance_at'"
            ).scalar_one()
        else:
            definition = connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_op_events_cost_tenant_instance_at' AND schemaname = current_schema()"
            ).scalar_one()
        assert "WHERE" in definition.upper() and "'COST'" in definition  # partial: decisions are not in it
        if engine.dialect.name == "sqlite":
            # The statement budgets run uses it: 'COST' is a literal in it, not a parameter.
            compiled = opevents._COSTS_SINCE.compile(dialect=engine.dialect)
            values = {"tenant": "a", "instance": "b", "since": dt.datetime(2026, 1, 1)}
            params = tuple(values[name] for name in compiled.positiontup or ())
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
            assert "ix_op_events_cost_tenant_instance_at" in " ".join(str(row[-1]) for row in plan)
