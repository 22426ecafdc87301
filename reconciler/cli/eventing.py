"""``armctl events prune``: apply the op-event retention (archive, then delete; delete archives
past the archive retention; sign a checkpoint listing both). ``armctl events export``: the
recorded decisions (redacted, as stored) for a replay where the database is out of reach."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.cli import keying, reconciling
from reconciler.decisions import replaying
from reconciler.evidence import retention
from reconciler.reconcile import running
from reconciler.state import database

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
    """Archive op events older than the retention to gzipped JSON Lines, then delete them; delete
    archives past ARM_ARCHIVE_RETENTION_DAYS; sign a checkpoint that lists both."""
    keep = days or settings.op_event_retention_days
    now = clock.SystemClock().now()
    cutoff = now - dt.timedelta(days=keep)
    db = running.open_database(settings.database)
    policy = dataclasses.replace(reconciling.retention_policy(settings), database_days=keep)
    signer = keying.signer(settings)
    with database.transaction(db) as connection:
        swept = retention.run(connection, policy, now, signer)
    click.echo(
        f"Archived and deleted {swept.archived} op events older than {cutoff:%Y-%m-%d %H:%M} UTC into {settings.archive_dir}/; "
        f"{len(swept.pruned)} archives past their {settings.archive_retention_days}-day retention deleted."
    )


@events.command("export")
@click.option("--since", default="7d", show_default=True, help="Decisions recorded since then: 7d, 12h, 30m or an ISO 8601 time.")
@click.option("--tenant", default=None, help="Only this tenant's decisions.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="The file to write (gzipped JSON Lines).")
@click.pass_obj
def export(settings: settings_.Settings, since: str, tenant: str | None, out: str) -> None:
    """Write the recorded decisions (arguments redacted, as stored) to a gzipped JSON Lines file
    that 'armctl plan --base --head --replay FILE' replays against a pull request's head."""
    moment = replaying.parse_since(since, clock.SystemClock().now())
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        count = replaying.export(connection, Path(out), moment, tenant)
    click.echo(f"Wrote {count} recorded decisions since {since} to {out}.")
