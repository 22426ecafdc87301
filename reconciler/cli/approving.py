"""``armctl approvals list | approve | deny | sweep``: decide what gates are waiting for."""

from __future__ import annotations

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.cli import planview
from reconciler.reconcile import approving, running

__all__ = ["approvals"]


@click.group()
def approvals() -> None:
    """List and decide approval requests."""


@approvals.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "approved", "denied", "expired", "all"]), default="pending", show_default=True
)
@click.option("--tenant", default=None)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def list_(settings: settings_.Settings, status: str, tenant: str | None, fmt: str) -> None:
    """Approval requests (pending ones by default)."""
    db = running.open_database(settings.database)
    with db.connect() as connection:
        rows = approving.list_approvals(connection, None if status == "all" else status, tenant)
    if fmt == "json":
        click.echo(planview.dumps(rows))
        return
    if not rows:
        click.echo(f"No {'' if status == 'all' else status + ' '}approvals.")
    for row in rows:
        given = sum(1 for d in row["decisions"] if d["decision"] == "APPROVE")
        click.echo(
            f"{row['id']:>5}  {row['status']:9} {row['subject_kind']}/{row['subject_name']}  {row['transition']}  "
            f"{given}/{row['required']} from {' or '.join(approving.roles_of(row))}"
        )


def _decide(settings: settings_.Settings, approval_id: int, operator: str, decision: str, justification: str) -> None:
    db = running.open_database(settings.database)
    with db.begin() as connection:
        result = approving.decide(connection, approval_id, operator, decision, justification, clock.SystemClock().now())
    verb = "approved" if decision == "APPROVE" else "denied"
    click.echo(f"Approval {result.approval_id} {verb} by {operator}: now {result.status} ({result.approvals}/{result.required}).")
    if result.status == "APPROVED" and result.subject_kind == "ToolCall":
        click.echo("The runtime's next ask for that call is allowed, once.")
    elif result.status == "APPROVED":
        click.echo("The next 'armctl apply' (or daemon reconcile) takes the step it unblocks.")


@approvals.command()
@click.argument("approval_id", type=int)
@click.option("--as", "operator", required=True, help="The Operator deciding (metadata.name).")
@click.option("--justification", "-m", default="", help="Why.")
@click.pass_obj
def approve(settings: settings_.Settings, approval_id: int, operator: str, justification: str) -> None:
    """Approve a pending request as OPERATOR."""
    _decide(settings, approval_id, operator, "APPROVE", justification)


@approvals.command()
@click.argument("approval_id", type=int)
@click.option("--as", "operator", required=True, help="The Operator deciding (metadata.name).")
@click.option("--justification", "-m", required=True, help="Why (required for a denial).")
@click.pass_obj
def deny(settings: settings_.Settings, approval_id: int, operator: str, justification: str) -> None:
    """Deny a pending request as OPERATOR."""
    _decide(settings, approval_id, operator, "DENY", justification)


@approvals.command()
@click.pass_obj
def sweep(settings: settings_.Settings) -> None:
    """Expire pending approvals past their TTL and escalate those due (the server does this every 30 s)."""
    db = running.open_database(settings.database)
    with db.begin() as connection:
        swept = approving.sweep(connection, clock.SystemClock().now())
    for label, ids in (("Expired", swept.expired), ("Escalated", swept.escalated)):
        if ids:
            click.echo(f"{label}: {', '.join(str(i) for i in ids)}")
    if not (swept.expired or swept.escalated):
        click.echo("Nothing to expire or escalate.")
