"""Alembic environment: runs migrations on the connection ``database.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from reconciler.state import tables

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=tables.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
