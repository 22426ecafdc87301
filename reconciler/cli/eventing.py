"""``armctl events prune``: apply the op-event retention (archive, then delete)."""

from __future__ import annotations

import datetime as dt

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.reconcile import running
from reconciler.state import database, opevents

__all__ = ["events"]


@click.group()
def events() -> None:
    """Operational events (decisions, heartbeats, costs)."""


@events.command()
@click.option(
    "--days",
    type=click.IntRange(1, 36500),
    default=None,
    help="Keep this many days (env ARM_OP_EVENT_RETENTION_DAYS, default 30).",
)
@click.pass_obj
def prune(settings: settings_.Settings, days: int | None) -> None:
    """Archive op events older than the retention to gzipped JSON Lines, then delete them."""
    keep = days or settings.op_event_retention_days
    cutoff = clock.SystemClock().now() - dt.timedelta(days=keep)
    db = running.open_database(settings.database)
    with database.transaction(db) as connection:
        moved = opevents.archive_and_prune(connection, cutoff, settings.archive_dir)
    click.echo(f"Archived and deleted {moved} op events older than {cutoff:%Y-%m-%d %H:%M} UTC into {settings.archive_dir}/.")
