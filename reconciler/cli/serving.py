"""``armctl serve`` (the HTTP API) and ``armctl token create | revoke`` (its credentials)."""

from __future__ import annotations

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.reconcile import running, tokens

__all__ = ["serve", "token"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.pass_obj
def serve(settings: settings_.Settings, host: str, port: int) -> None:
    """Serve the HTTP API (decisions, approvals, controls, events, status) on HOST:PORT."""
    import sys

    import uvicorn

    from reconciler.cli import deciding as deciding_cli
    from reconciler.reconcile import deciding
    from reconciler.server import app

    # Decisions hop between the event loop and worker threads: a short GIL switch interval keeps
    # one busy thread from holding the others' answers for the default 5 ms.
    sys.setswitchinterval(0.0005)
    db = running.open_database(settings.database)
    decider = deciding.Decider(db, engine=deciding_cli.policy_engine(settings), group_commit=True)
    uvicorn.run(app.create_app(db, decider=decider), host=host, port=port, log_level="warning", access_log=False)


@click.group()
def token() -> None:
    """Create and revoke API tokens (stored hashed; shown once)."""


@token.command("create")
@click.option("--name", required=True, help="A name to recognise and revoke it by.")
@click.option("--kind", type=click.Choice(["runtime", "operator"]), required=True)
@click.option("--tenant", required=True)
@click.option("--operator", default=None, help="For operator tokens: the Operator (metadata.name) it acts as.")
@click.option("--instance", "instances", multiple=True, help="For runtime tokens: limit it to these instances.")
@click.option("--ttl-days", type=click.IntRange(1, 3650), default=None, help="Expire after this many days.")
@click.pass_obj
def create(
    settings: settings_.Settings,
    name: str,
    kind: str,
    tenant: str,
    operator: str | None,
    instances: tuple[str, ...],
    ttl_days: int | None,
) -> None:
    """Create a token and print it (it cannot be shown again)."""
    db = running.open_database(settings.database)
    with db.begin() as connection:
        value = tokens.create(
            connection,
            name,
            kind,
            tenant,
            clock.SystemClock().now(),
            operator=operator,
            instances=list(instances),
            ttl_days=ttl_days,
        )
    click.echo(value)


@token.command("revoke")
@click.option("--name", required=True)
@click.pass_obj
def revoke(settings: settings_.Settings, name: str) -> None:
    """Revoke every live token of that name."""
    db = running.open_database(settings.database)
    with db.begin() as connection:
        count = tokens.revoke(connection, name, clock.SystemClock().now())
    click.echo(f"Revoked {count} token(s) named {name!r}.")
