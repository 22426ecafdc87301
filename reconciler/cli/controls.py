"""``armctl instance list | show | pause | resume | quarantine | read-only | drain`` and ``armctl
tenant pause | quarantine | resume``: the emergency controls from the shell.

Like ``armctl approvals``, these work on the database directly and act as the Operator named with
``--operator`` (its roles, as applied from Git, say what it may do). Each control goes through
:mod:`reconciler.oversight.holds`, the same code ``POST /v1/instances/{id}/controls`` and
``POST /v1/tenants/{tenant}/controls`` run, so it is authorised, checked against the instance
lifecycle and recorded exactly as the API does it. ``instance list`` offers what
``GET /v1/instances`` does, for any tenant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from reconciler import clock, errors
from reconciler import settings as settings_
from reconciler.cli import output, planview
from reconciler.lifecycle import machines
from reconciler.oversight import holds
from reconciler.reconcile import reporting, running
from reconciler.state import database

__all__ = ["instance", "tenant"]

FORMATS = click.Choice(["text", "json"])
_T = TypeVar("_T")

#: What each instance control does, for its ``--help``; the controls themselves come from
#: ``holds.CONTROLS``.
_HELP = {
    "pause": "Pause INSTANCE: it stops acting and stays PAUSED, held against Git, until resumed.",
    "resume": "Resume a paused or read-only INSTANCE: back to ACTIVE.",
    "quarantine": "Quarantine INSTANCE: it stays QUARANTINED, held against Git, until retired.",
    "read-only": "Set INSTANCE read-only: it may still read but not write, held against Git, until resumed.",
    "drain": "Drain INSTANCE: it finishes its work and is then retired.",
}
_TENANT_HELP = {
    "pause": "Pull TENANT's kill switch: pause every instance of it, and those created later, until resumed.",
    "quarantine": "Pull TENANT's kill switch: quarantine every instance of it, and those created later.",
    "resume": "Release TENANT's kill switch: resume the instances it holds (those held on their own stay held).",
}
_PAST = {"pause": "paused", "resume": "resumed", "quarantine": "quarantined"}


def _refuse(exc: errors.ArmError, context: str) -> NoReturn:
    """Print a refusal as ``Type: message`` with the object refused in front (a lifecycle or
    permission refusal does not name it), and exit 1, as ``main.run`` does for other errors."""
    click.echo(f"{type(exc).__name__}: {context}: {exc}", err=True)
    sys.exit(1)


def _reason(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("say why (it is written into the change record)", ctx, param)
    return value


def _control_options(func: Any) -> Any:
    func = click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)(func)
    func = click.option(
        "--reason", "-m", required=True, callback=_reason, help="Why (required; written into the change record)."
    )(func)
    func = click.option(
        "--operator", "--as", "operator", required=True, metavar="NAME", help="The Operator acting (metadata.name)."
    )(func)
    return func


def _state_text(row: dict[str, Any]) -> str:
    return f"{row['state']} (held)" if row["held_by"] else row["state"]


# ---------------------------------------------------------------- instance


@click.group()
def instance() -> None:
    """List agent instances and pull their emergency controls."""


@instance.command("list")
@click.option("--tenant", default=None, help="Only this tenant's instances.")
@click.option("--environment", default=None, help="Only instances in this environment.")
@click.option("--deployment", default=None, help="Only instances of this deployment.")
@click.option(
    "--state",
    type=click.Choice(machines.INSTANCE.states, case_sensitive=False),
    default=None,
    help="Only instances in this state (default: every state but RETIRED).",
)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def list_(
    settings: settings_.Settings, tenant: str | None, environment: str | None, deployment: str | None, state: str | None,
    fmt: str,
) -> None:  # fmt: skip
    """Instances, as 'GET /v1/instances' lists them: each with its state, version and health."""
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        rows = reporting.instances(connection, tenant=tenant, environment=environment, deployment=deployment, state=state)
    if fmt == "json":
        click.echo(planview.dumps(rows))
        return
    if not rows:
        click.echo("No instances match.")
        return
    output.print_table(
        ("ID", "STATE", "VERSION", "ENVIRONMENT", "HEALTH"),
        [(row["id"], _state_text(row), row["version"], row["environment"], row["health"]) for row in rows],
    )


@instance.command()
@click.argument("instance_id")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def show(settings: settings_.Settings, instance_id: str, fmt: str) -> None:
    """One instance: where it runs, its state and who holds it, and its last change records."""
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        detail = reporting.instance(connection, instance_id)
    if fmt == "json":
        click.echo(planview.dumps(detail))
        return
    click.echo(f"Instance {click.style(detail['id'], bold=True)} of tenant {detail['tenant']}")
    held = f" (held by {detail['held_by']})" if detail["held_by"] else ""
    click.echo(f"  state:       {detail['state']}{held}")
    if detail["tenant_hold"]:
        click.echo(
            f"  tenant:      kill switch pulled, holding its instances {detail['tenant_hold']} "
            f"until 'armctl tenant resume {detail['tenant']}'"
        )
    click.echo(f"  deployment:  {detail['deployment']} ({detail['template']} in {detail['environment']})")
    click.echo(f"  version:     {detail['version']}")
    click.echo(f"  health:      {detail['health']}, last heartbeat {detail['last_heartbeat'] or 'never'}")
    click.echo(f"  created:     {detail['created_at']} by commit {detail['created_sha'][:12]}")
    click.echo(f"  updated:     {detail['updated_at']}")
    if detail["history"]:
        click.echo(click.style("Last change records", bold=True))
    for record in detail["history"]:
        who = record["operator"] or record["author"] or "-"
        before, after = record["before"] or {}, record["after"] or {}
        change = f"{before.get('state', '-')} → {after['state']}" if "state" in after else ""
        why = f": {after['reason']}" if after.get("reason") else ""
        click.echo(f"  {record['at'][:19]}  {record['type']:24} {change}  by {who}{why}")


def _controlled(settings: settings_.Settings, what: str, target: str, control: str, apply: Callable[..., _T]) -> _T:
    """``apply(connection, now)`` in one transaction; a refusal that does not name ``target`` is
    printed with it in front (``cannot pause instance 'x': ...``)."""
    db = running.open_database(settings.database)
    try:
        with database.transaction(db) as connection:
            return apply(connection, clock.SystemClock().now())
    except errors.ArmError as exc:
        if repr(target) in str(exc):
            raise
        _refuse(exc, f"cannot {control} {what} {target!r}")


def _control_instance(settings: settings_.Settings, instance_id: str, control: str, operator: str, reason: str, fmt: str) -> None:
    done = _controlled(
        settings, "instance", instance_id, control,
        lambda connection, now: holds.control_instance(connection, instance_id, control, operator, reason, now),
    )  # fmt: skip
    if fmt == "json":
        click.echo(planview.dumps({"instance": done.instance, "before": done.before, "after": done.after}))
        return
    click.echo(f"Instance {done.instance}: {done.before} → {done.after} ({control} by {operator}).")
    if holds.CONTROLS[control][2]:
        click.echo("Held: Git does not undo this; the reconciler reports the difference as held drift.")


def _command(control: str, help_: str, metavar: str, handler: Callable[..., None]) -> click.Command:
    """``armctl instance|tenant <control> TARGET``: ``handler(settings, target, control, ...)``."""

    @click.command(control, help=help_)
    @click.argument("target", metavar=metavar)
    @_control_options
    @click.pass_obj
    def command(settings: settings_.Settings, target: str, operator: str, reason: str, fmt: str) -> None:
        handler(settings, target, control, operator, reason, fmt)

    return command


for _control in holds.CONTROLS:
    _help = _HELP.get(_control, f"Apply the {_control!r} emergency control to INSTANCE.")
    instance.add_command(_command(_control, _help, "INSTANCE", _control_instance))


# ---------------------------------------------------------------- tenant


@click.group()
def tenant() -> None:
    """The kill switch: hold every instance of a tenant at once (pause, quarantine), or release it."""


def _control_tenant(settings: settings_.Settings, name: str, control: str, operator: str, reason: str, fmt: str) -> None:
    done = _controlled(
        settings, "tenant", name, control,
        lambda connection, now: holds.control_tenant(connection, name, control, operator, reason, now),
    )  # fmt: skip
    if fmt == "json":
        instances = [{"instance": d.instance, "before": d.before, "after": d.after} for d in done]
        click.echo(planview.dumps({"tenant": name, "instances": instances}))
        return
    count = f"{len(done)} instance{'s' if len(done) != 1 else ''} {_PAST.get(control, 'changed')}"
    if control == "resume":
        click.echo(f"Tenant {name}: kill switch released by {operator}; {count}.")
    else:
        click.echo(f"Tenant {name}: kill switch pulled ({control}) by {operator}; {count}.")
    width = max((len(d.instance) for d in done), default=0)
    for d in done:
        click.echo(f"  {d.instance:<{width}}  {d.before} → {d.after}")
    if control == "resume":
        click.echo("Instances an operator holds on their own stay held.")
    else:
        click.echo(f"Instances created while it is pulled are denied too, until 'armctl tenant resume {name}'.")


for _control in holds.TENANT_CONTROLS:
    _help = _TENANT_HELP.get(_control, f"Apply the {_control!r} kill switch to TENANT.")
    tenant.add_command(_command(_control, _help, "TENANT", _control_tenant))
