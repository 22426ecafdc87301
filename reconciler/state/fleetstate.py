"""The fleet's single state row: which commit is applied, and the out-of-Git state generation."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from reconciler.state import tables

__all__ = ["bump_generation", "read"]


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
