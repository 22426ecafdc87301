"""``armctl notifications list | deliver | retry``: what the fleet told its channels, and telling it now.

``list`` shows the outbox newest first: each notification's event, object, channel and delivery
status (PENDING with its next attempt and last error, DELIVERED, FAILED after its last attempt).
``deliver`` drains what is due once, as the daemon's notification job does every few seconds:
for a fleet run by ``armctl apply`` from CI or cron, or to push a retry after fixing a receiver.
``retry`` sends notifications again from their first attempt (those the worker gave up on,
once their receiver is fixed). Channel URLs and signing keys are read from the environment
variables the channels name.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.cli import output, planview
from reconciler.notifications import delivering, outbox
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["notifications"]

FORMATS = click.Choice(["text", "json"])


@click.group()
def notifications() -> None:
    """Notifications sent to NotificationChannels: their delivery status, and delivering them."""


@notifications.command("list")
@click.option(
    "--status",
    type=click.Choice([s.lower() for s in outbox.STATUSES] + ["all"], case_sensitive=False),
    default="all",
    show_default=True,
)
@click.option("--tenant", default=None, help="Only this tenant's channels.")
@click.option("--channel", default=None, help="Only this channel (metadata.name).")
@click.option("--event", default=None, help="Only this event type, e.g. APPROVAL_REQUESTED.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def list_(
    settings: settings_.Settings, status: str, tenant: str | None, channel: str | None, event: str | None, limit: int, fmt: str
) -> None:
    """Notifications, newest first, with their delivery status."""
    with output.json_errors(fmt):
        db = running.open_database(settings.database)
        with database.reading(db) as connection:
            rows = outbox.list_notifications(
                connection,
                tenant=tenant,
                status=None if status.lower() == "all" else status.upper(),
                channel=channel,
                event=event.upper() if event else None,
                limit=limit,
            )
    if fmt == "json":
        click.echo(planview.dumps({"notifications": rows}))
        return
    if not rows:
        click.echo("No notifications.")
    for row in rows:
        _print(row)


def _print(row: dict[str, Any]) -> None:
    where = "/".join(p for p in (row["tenant"], row["environment"]) if p)
    click.echo(f"{row['id']:>6}  {row['status']:9} {row['event']:24} {where:20} → {row['channel']}  {row['createdAt']}")
    click.echo(f"        {row['summary']}")
    if row["status"] == "PENDING" and row["attempts"]:
        click.echo(f"        attempt {row['attempts']} failed: {row['lastError']}; next at {row['nextAttemptAt']}")
    elif row["status"] == "PENDING" and row["nextAttemptAt"] != row["createdAt"]:
        click.echo(f"        waits behind an earlier notification of its channel; next at {row['nextAttemptAt']}")
    elif row["status"] == "FAILED":
        click.echo(f"        gave up after {row['attempts']} attempts: {row['lastError']}")
    elif row["status"] == "DELIVERED":
        click.echo(f"        delivered {row['deliveredAt']} (HTTP {row['lastStatus']}, attempt {row['attempts']})")


@notifications.command()
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def deliver(settings: settings_.Settings, fmt: str) -> None:
    """Send every notification that is due now, once (the daemon does this continuously)."""
    with output.json_errors(fmt):
        db = running.open_database(settings.database)
        passed = delivering.drain(db, clock.SystemClock(), os.environ, delivering.Policy.of(settings))
    if fmt == "json":
        click.echo(json.dumps(passed.as_dict(), indent=2))
        return
    click.echo(
        f"Delivered {len(passed.delivered)}, retrying later {len(passed.retrying) + len(passed.deferred)}, "
        f"given up {len(passed.failed)}."
    )
    if passed.retrying or passed.failed:
        click.echo("See 'armctl notifications list --status pending' (or failed) for why.")


@notifications.command()
@click.argument("ids", type=int, nargs=-1)
@click.option("--failed", is_flag=True, help="Every notification the worker gave up on.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def retry(settings: settings_.Settings, ids: tuple[int, ...], failed: bool, fmt: str) -> None:
    """Send notifications IDS (or --failed: every FAILED one) again, from their first attempt."""
    if not ids and not failed:
        raise click.UsageError("name the notifications to send again, or --failed for every one given up on")
    with output.json_errors(fmt):
        db = running.open_database(settings.database)
        with database.transaction(db) as connection:
            requeued = outbox.retry(connection, ids, clock.SystemClock().now(), failed=failed)
    if fmt == "json":
        click.echo(json.dumps({"requeued": requeued}, indent=2))
        return
    if not requeued:
        click.echo("Nothing to send again.")
        return
    click.echo(
        f"Requeued {', '.join(str(i) for i in requeued)}: sent by the daemon's next pass, or 'armctl notifications deliver'."
    )
