"""``armctl token create | list | revoke``: the API's credentials, stored hashed and shown once.

Checks what only the command line can get wrong (an operator token without ``--operator``,
``--instance`` on a ci token, ``--template`` on anything but a ci token) as a
usage error before it opens the database; :mod:`reconciler.oversight.access` checks the rest
against the applied fleet (tenant, operator, instances, templates).
"""

from __future__ import annotations

from typing import Any

import click

from reconciler import clock, errors
from reconciler import settings as settings_
from reconciler.cli import output, planview
from reconciler.oversight import access
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["token"]

FORMATS = click.Choice(["text", "json"])


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (stored hashed; shown once)."""


@token.command("create")
@click.option("--name", required=True, help="A name to recognise and revoke it by.")
@click.option(
    "--kind",
    type=click.Choice(list(access.KINDS)),
    required=True,
    help="runtime: decisions and events; operator: acts as an Operator; ci: submits evaluation runs, reads versions.",
)
@click.option("--tenant", required=True)
@click.option("--operator", default=None, help="For operator tokens (required): the Operator (metadata.name) it acts as.")
@click.option("--instance", "instances", multiple=True, help="For runtime tokens: limit it to these instances (each must exist).")
@click.option(
    "--template", "templates", multiple=True, help="For ci tokens: limit it to these templates' versions (each must exist)."
)
@click.option("--ttl-days", type=click.IntRange(1, 3650), default=None, help="Expire after this many days.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="text prints the bare token.")
@click.pass_obj
def create(
    settings: settings_.Settings,
    name: str,
    kind: str,
    tenant: str,
    operator: str | None,
    instances: tuple[str, ...],
    templates: tuple[str, ...],
    ttl_days: int | None,
    fmt: str,
) -> None:
    """Create a token and print it (it cannot be shown again)."""
    if kind == "operator" and not operator:
        raise click.UsageError("--operator is required for operator tokens: name the Operator the token acts as")
    if instances and kind == "ci":
        raise click.UsageError("--instance does not limit a ci token; limit it to templates with --template")
    if templates and kind != "ci":
        raise click.UsageError("--template limits a ci token")
    db = running.open_database(settings.database)
    with database.transaction(db) as connection:
        value = access.create(
            connection,
            name,
            kind,
            tenant,
            clock.SystemClock().now(),
            operator=operator,
            instances=list(instances),
            templates=list(templates),
            ttl_days=ttl_days,
        )
    if fmt == "json":
        click.echo(planview.dumps({"name": name, "kind": kind, "tenant": tenant, "token": value}))
        return
    click.echo(value)


@token.command("list")
@click.option("--all", "everything", is_flag=True, help="Include revoked and expired tokens.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def list_(settings: settings_.Settings, everything: bool, fmt: str) -> None:
    """List tokens by name, kind, tenant and scope (never their values): live ones, or all with --all."""
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        rows = access.listing(connection, clock.SystemClock().now())
    if not everything:
        rows = [r for r in rows if r["status"] == "live"]
    if fmt == "json":
        click.echo(planview.dumps([_token_json(r) for r in rows]))
        return
    if not rows:
        click.echo("No tokens." if everything else "No live tokens ('--all' lists revoked and expired ones too).")
        return
    table: list[tuple[str, ...]] = []
    for r in rows:
        scope = ", ".join(r["scope"].get("instances") or r["scope"].get("templates") or []) or "tenant"
        expires = r["expires_at"].strftime("%Y-%m-%d %H:%M") if r["expires_at"] else "never"
        table.append(
            (
                str(r["name"]),
                str(r["kind"]),
                str(r["tenant"]),
                str(r["operator"] or "-"),
                scope,
                r["created_at"].strftime("%Y-%m-%d %H:%M"),
                expires,
                str(r["status"]),
            )
        )
    output.print_table(("NAME", "KIND", "TENANT", "OPERATOR", "SCOPE", "CREATED", "EXPIRES", "STATUS"), table)


def _token_json(row: dict[str, Any]) -> dict[str, Any]:
    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "name": row["name"], "kind": row["kind"], "tenant": row["tenant"], "operator": row["operator"], "scope": row["scope"],
        "createdAt": at(row["created_at"]), "expiresAt": at(row["expires_at"]), "revokedAt": at(row["revoked_at"]),
        "status": row["status"],
    }  # fmt: skip


@token.command("revoke")
@click.option("--name", required=True)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def revoke(settings: settings_.Settings, name: str, fmt: str) -> None:
    """Revoke every live token of that name; exit 1 when no token has that name."""
    db = running.open_database(settings.database)
    with database.transaction(db) as connection:
        count = access.revoke(connection, name, clock.SystemClock().now())
        if count == 0 and not access.exists(connection, name):
            raise errors.NotFound(f"no token is named {name!r} (see the --name it was created with)")
    if fmt == "json":
        click.echo(planview.dumps({"name": name, "revoked": count}))
        return
    if count == 0:
        click.echo(f"Every token named {name!r} is already revoked; nothing to do.")
        return
    click.echo(f"Revoked {output.plural(count, 'token')} named {name!r}.")
