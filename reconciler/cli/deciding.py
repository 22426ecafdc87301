"""``armctl decide``: ask one tool-call decision from the shell, recorded like any other."""

from __future__ import annotations

import json
import math
import sys

import click

from reconciler import errors
from reconciler import settings as settings_
from reconciler.cli import planview
from reconciler.decisions import deciding
from reconciler.policy import engines
from reconciler.policy import inputs as policy_deciding
from reconciler.reconcile import running

__all__ = ["decide", "policy_engine"]

EXIT_CODES = {"ALLOW": 0, "NEEDS_APPROVAL": 2, "DENY": 3}


def policy_engine(settings: settings_.Settings) -> engines.Engine:
    """The engine decisions use: the OPA at ``ARM_OPA_URL`` when set, else the embedded one."""
    if settings.opa_url:
        from reconciler.policy import opa

        return opa.OpaEngine(settings.opa_url, token=settings.opa_token)
    return engines.EmbeddedEngine()


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


@click.command()
@click.option("--instance", required=True, help="The instance making the call.")
@click.option("--tool", required=True, help="The tool it wants to call.")
@click.option(
    "--args",
    "args_json",
    default="{}",
    show_default=True,
    help="The call's arguments as a JSON object; @FILE reads them from a file and - from standard input.",
)
@click.option(
    "--cost",
    type=click.FloatRange(min=0, max=policy_deciding.MAX_COST),
    callback=_finite,
    default=0.0,
    show_default=True,
    help="Estimated cost of the call (zero or more, as the API's costEstimate).",
)
@click.option("--run", "run_id", default=None, help="The run the call belongs to (for per-run budgets).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def decide(
    settings: settings_.Settings, instance: str, tool: str, args_json: str, cost: float, run_id: str | None, fmt: str
) -> None:
    """Ask whether INSTANCE may call TOOL now. Exit 0 ALLOW, 2 NEEDS_APPROVAL, 3 DENY, 1 error."""
    where = "--args"
    if args_json == "-" or args_json.startswith("@"):
        where = "--args (standard input)" if args_json == "-" else f"--args {args_json}"
        args_json = _read_args(args_json, where)
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise errors.ConfigError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise errors.ConfigError(f"{where} must be a JSON object")
    found = policy_deciding.number_problem(args, "args")
    if found is not None:
        raise errors.ConfigError(f"{where}: {found[1]}")
    decider = deciding.Decider(running.open_database(settings.database), engine=policy_engine(settings))
    decision = decider.decide(deciding.Request(instance, tool, args, cost, run_id))
    if fmt == "json":
        click.echo(planview.dumps(decision.as_dict()))
    else:
        colour = {"ALLOW": "green", "NEEDS_APPROVAL": "yellow", "DENY": "red"}[decision.decision]
        click.echo(
            f"{click.style(decision.decision, fg=colour, bold=True)} (decision {decision.decision_id}, policy {decision.policy_revision})"
        )
        for reason in decision.reasons:
            click.echo(f"  {reason}")
        if decision.approval_id is not None and decision.decision == "NEEDS_APPROVAL":
            click.echo(
                f"  approval {decision.approval_id}: 'armctl approvals approve {decision.approval_id} --as OPERATOR -m WHY'"
            )
        elif decision.approval_id is not None:  # the call was allowed by (or denied against) an approval already decided
            click.echo(f"  approval {decision.approval_id} (decided; 'armctl approvals list --status all' shows it)")
    sys.exit(EXIT_CODES[decision.decision])


#: As much as the decision endpoint reads of a body (``server.decisions``: 1 MiB).
_MAX_ARGS_BYTES = 1024 * 1024


def _read_args(source: str, where: str) -> str:
    """Arguments from ``@FILE`` or ``-`` (standard input): longer ones than a command line holds."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(_MAX_ARGS_BYTES + 1)
        else:
            with open(source[1:], "rb") as f:
                data = f.read(_MAX_ARGS_BYTES + 1)
    except OSError as exc:
        raise errors.ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    if len(data) > _MAX_ARGS_BYTES:
        raise errors.ConfigError(f"{where}: more than {_MAX_ARGS_BYTES} bytes, as the decision endpoint refuses")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.ConfigError(f"{where} is not UTF-8 (byte {exc.start})") from exc
