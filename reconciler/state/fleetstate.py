"""The fleet's single state row: which commit is applied, and the out-of-Git state generation."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from reconciler.state import database, tables

__all__ = ["bump_generation", "key_of", "read", "read_key"]


_READ = sa.select(tables.fleet_state).where(tables.fleet_state.c.id == 1)


def read(connection: sa.Connection) -> dict[str, Any] | None:
    row = connection.execute(_READ).mappings().first()
    return None if row is None else dict(row)


def bump_generation(connection: sa.Connection) -> None:
    """Note a change made outside Git (approval, control) so the next reconcile is not skipped."""
    fs = tables.fleet_state
    updated = connection.execute(fs.update().where(fs.c.id == 1).values(generation=fs.c.generation + 1)).rowcount
    if not updated:
        connection.execute(fs.insert().values(id=1, generation=1, observed_generation=0))


def read_key(cursor: Any) -> tuple[Any, ...]:
    """(applied SHA, applied at, generation) through a DB-API cursor: what decisions key their
    cached resolution on. Cheap enough to ask after every batch of decisions."""
    cursor.execute("SELECT applied_sha, applied_at, generation FROM fleet_state WHERE id = 1")
    row = cursor.fetchone()
    if row is None:
        return (None, None, None)
    return (row[0], None if row[1] is None else database.parse_at(row[1]), row[2])


def key_of(state: dict[str, Any]) -> tuple[Any, ...]:
    """The same key from a row ``read`` returned."""
    return (state.get("applied_sha"), state.get("applied_at"), state.get("generation"))
