"""``armctl keys create | list``: the Ed25519 keys that sign checkpoints, audit packs and bundles.

:func:`signer` is how every command that signs gets its key (``ARM_SIGNING_KEY_FILE``, else the
newest managed key, made on first use with a note on stderr).
"""

from __future__ import annotations

import datetime as dt

import click

from reconciler import clock, errors
from reconciler import settings as settings_
from reconciler.cli import planview
from reconciler.evidence import keys as keys_
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["keys", "signer"]


def signer(settings: settings_.Settings, *, create: bool = True) -> keys_.Signer | None:
    """The key this process signs with; a managed key made now is announced on stderr."""
    made = keys_.signer_for(settings.keys_dir, settings.signing_key_file, clock.SystemClock().now(), create_missing=create)
    if made is not None and made.created:
        click.echo(f"Created signing key {made.kid} in {made.path} (mode 0600); 'armctl keys list' shows it.", err=True)
    return made


@click.group()
def keys() -> None:
    """Signing keys (Ed25519): checkpoints of the audit chain, audit packs, OPA bundles."""


@keys.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def create(settings: settings_.Settings, fmt: str) -> None:
    """Make a new managed key in the state directory (mode 0600); it signs from now on, and the
    older keys stay published so what they signed still verifies (rotation)."""
    if settings.signing_key_file is not None:
        raise errors.ConfigError(
            f"ARM_SIGNING_KEY_FILE is set ({settings.signing_key_file}): that key signs; unset it to use managed keys, "
            "or replace the file to rotate your own key"
        )
    db = running.open_database(settings.database)
    now = clock.SystemClock().now()
    made = keys_.create(settings.keys_dir, now)
    with database.transaction(db) as connection:
        keys_.register(connection, made.public, made.source, now)
    if fmt == "json":
        click.echo(planview.dumps({**made.public.as_dict(), "path": str(made.path), "source": made.source, "current": True}))
        return
    click.echo(f"Created signing key {made.kid} (Ed25519) in {made.path}, mode 0600; it signs from now on.")
    click.echo(f"Public key: {made.public.as_dict()['publicKey']}")


@keys.command(name="list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def list_keys(settings: settings_.Settings, fmt: str) -> None:
    """The signing keys: the one this machine signs with, the managed keys of the state
    directory, ARM_SIGNING_KEY_FILE's, and every public key published in the database."""
    db = running.open_database(settings.database)
    current = keys_.signer_for(settings.keys_dir, settings.signing_key_file, clock.SystemClock().now(), create_missing=False)
    local = {s.kid: s for s in keys_.local_signers(settings.keys_dir)}
    if current is not None:
        local.setdefault(current.kid, current)
    with database.reading(db) as connection:
        published = {key["kid"]: key for key in keys_.published(connection)}
    listed = []
    for kid in [*published, *(k for k in local if k not in published)]:
        key = published.get(kid) or {**local[kid].public.as_dict(), "source": local[kid].source, "createdAt": None}
        where = local.get(kid)
        listed.append(
            {**key, "current": current is not None and kid == current.kid, "privateKey": str(where.path) if where else None,
             "published": kid in published}
        )  # fmt: skip
    if fmt == "json":
        click.echo(planview.dumps({"current": current.kid if current else None, "keys": listed}))
        return
    if not listed:
        click.echo("No signing keys yet: 'armctl keys create' makes one (the first apply does too).")
        return
    for key in listed:
        mark = click.style("* ", fg="green") if key["current"] else "  "
        created = (
            dt.datetime.fromisoformat(key["createdAt"]).strftime("%Y-%m-%d %H:%M") if key["createdAt"] else "not yet published"
        )
        place = key["privateKey"] or "public key only (signed elsewhere or earlier)"
        click.echo(f"{mark}{key['kid']}  {key['algorithm']}  {key['source']:7}  {created}  {place}")
        click.echo(f"    {key['publicKey']}")
    if current is None:
        click.echo("No key signs on this machine yet: 'armctl keys create' makes one.")
