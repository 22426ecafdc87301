"""``armctl approvals list | show | approve | deny | sweep``: decide what gates and tool calls wait for.

``list`` and ``show`` print what an approver decides: for a tool call, the call (tool, redacted
arguments, cost estimate, run) and the reasons it needs approval, as ``oversight.approving``
reads them; for a gate, the object and the step it waits to take. Every decision needs a
justification (``-m``), approve as well as deny: it is what the audit trail says.
"""

from __future__ import annotations

import json
from typing import Any

import click

from reconciler import clock, errors
from reconciler import settings as settings_
from reconciler.cli import planview
from reconciler.oversight import approving
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["approvals"]

#: Widest an approval's arguments are printed in ``list`` (``show`` prints them whole).
_ARGS_WIDTH = 100


@click.group()
def approvals() -> None:
    """List and decide approval requests."""


@approvals.command("list")
@click.option(
    "--status",
    type=click.Choice([s.lower() for s in approving.STATUSES] + ["all"], case_sensitive=False),
    default="pending",
    show_default=True,
    help="Which requests: used is an approved tool call its one allowed call has consumed.",
)
@click.option("--tenant", default=None)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def list_(settings: settings_.Settings, status: str, tenant: str | None, fmt: str) -> None:
    """Approval requests (pending ones by default), with what each asks."""
    status = status.lower()
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        rows = approving.list_approvals(connection, None if status == "all" else status, tenant)
    if fmt == "json":
        click.echo(planview.dumps(rows))
        return
    if not rows:
        click.echo(f"No {'' if status == 'all' else status + ' '}approvals.")
    for row in rows:
        _print(row, args_width=_ARGS_WIDTH)


@approvals.command()
@click.argument("approval_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def show(settings: settings_.Settings, approval_id: int, fmt: str) -> None:
    """One approval request: what it asks, who may decide it, the decisions so far."""
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        rows = approving.list_approvals(connection, None, approval_id=approval_id)
    if not rows:
        raise errors.NotFound(f"approval {approval_id} does not exist")
    (row,) = rows
    if fmt == "json":
        click.echo(planview.dumps(row))
        return
    _print(row, args_width=None)
    for key in ("created_at", "expires_at", "decided_at"):
        if row[key] is not None:
            click.echo(f"       {key.replace('_', ' ')}: {row[key].isoformat()}")
    for given in row["decisions"]:
        click.echo(f"       {given['decision']} by {given['operator']} at {given['at']}: {given['justification'] or '-'}")


def _print(row: dict[str, Any], args_width: int | None) -> None:
    given = sum(1 for d in row["decisions"] if d["decision"] == "APPROVE")
    click.echo(
        f"{row['id']:>5}  {row['status']:9} {row['subject_kind']}/{row['subject_name']}  {row['transition']}  "
        f"{given}/{row['required']} from {' or '.join(approving.roles_of(row))}"
    )
    call = row["request"]
    if call is not None:
        args = "(not recorded)" if call["args"] is None else json.dumps(call["args"], ensure_ascii=False, sort_keys=True)
        if args_width is not None and len(args) > args_width:
            args = args[: args_width - 1] + "…"
        extra = [f"cost {call['costEstimate']:g}" if call["costEstimate"] is not None else ""]
        extra.append(f"run {call['runId']}" if call["runId"] else "")
        click.echo(f"       call: {call['tool']} {args}  {'  '.join(e for e in extra if e)}".rstrip())
    for reason in row["reasons"]:
        click.echo(f"       why: {reason}")


def _justification(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("say why the request is approved or denied; it may not be blank", ctx, param)
    return value.strip()


def _decide(settings: settings_.Settings, approval_id: int, operator: str, decision: str, justification: str) -> None:
    db = running.open_database(settings.database)
    with database.transaction(db) as connection:
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
@click.option("--justification", "-m", required=True, callback=_justification, help="Why (required).")
@click.pass_obj
def approve(settings: settings_.Settings, approval_id: int, operator: str, justification: str) -> None:
    """Approve a pending request as OPERATOR."""
    _decide(settings, approval_id, operator, "APPROVE", justification)


@approvals.command()
@click.argument("approval_id", type=int)
@click.option("--as", "operator", required=True, help="The Operator deciding (metadata.name).")
@click.option("--justification", "-m", required=True, callback=_justification, help="Why (required).")
@click.pass_obj
def deny(settings: settings_.Settings, approval_id: int, operator: str, justification: str) -> None:
    """Deny a pending request as OPERATOR."""
    _decide(settings, approval_id, operator, "DENY", justification)


@approvals.command()
@click.pass_obj
def sweep(settings: settings_.Settings) -> None:
    """Expire pending approvals past their TTL and escalate those due (the server does this every 30 s)."""
    db = running.open_database(settings.database)
    with database.transaction(db) as connection:
        swept = approving.sweep(connection, clock.SystemClock().now())
    for label, ids in (("Expired", swept.expired), ("Escalated", swept.escalated)):
        if ids:
            click.echo(f"{label}: {', '.join(str(i) for i in ids)}")
    if not (swept.expired or swept.escalated):
        click.echo("Nothing to expire or escalate.")
