"""``armctl``: the click command group and the commands that read a fleet.

The CLI builds :class:`settings.Settings` from the environment and its options, calls down into
the layers, and is the only place that prints or picks exit codes. It catches only the project's
own :class:`errors.ArmError` (and click's usage errors): the user sees ``Type: message`` and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import ClassVar, NoReturn

import click

from reconciler import __version__, errors
from reconciler import settings as settings_
from reconciler.cli import output
from reconciler.desired import kinds

__all__ = ["cli", "run"]

FORMATS = click.Choice(["text", "json"])


class LazyGroup(click.Group):
    """Commands imported when they run: a database command's imports (SQLAlchemy, Alembic) cost
    ~0.5 s that ``armctl validate`` and ``armctl schema`` should not pay."""

    lazy: ClassVar[dict[str, str]] = {
        "init": "reconciler.cli.reconciling:init",
        "plan": "reconciler.cli.reconciling:plan",
        "apply": "reconciler.cli.reconciling:apply",
        "status": "reconciler.cli.reconciling:status",
        "history": "reconciler.cli.reconciling:history",
        "approvals": "reconciler.cli.approving:approvals",
        "audit": "reconciler.cli.auditing:audit",
        "policy": "reconciler.cli.policies:policy",
        "decide": "reconciler.cli.deciding:decide",
        "serve": "reconciler.cli.serving:serve",
        "run": "reconciler.cli.serving:run",
        "token": "reconciler.cli.tokens:token",
        "instance": "reconciler.cli.controls:instance",
        "tenant": "reconciler.cli.controls:tenant",
        "events": "reconciler.cli.eventing:events",
        "keys": "reconciler.cli.keying:keys",
        "eval": "reconciler.cli.evaluating:eval_",
        "version": "reconciler.cli.versions:version",
        "replay": "reconciler.cli.replaying:replay",
        "state": "reconciler.cli.replaying:state",
        "notifications": "reconciler.cli.notifying:notifications",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="armctl")
@click.option("--state-dir", type=click.Path(file_okay=False), help="State directory (env ARM_STATE_DIR, default .arm).")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning", show_default=True)
@click.pass_context
def cli(ctx: click.Context, state_dir: str | None, log_format: str, log_level: str) -> None:
    """ARM Reconciler: govern a fleet of AI agents from a Git repository."""
    output.configure_logging(log_format, log_level)
    ctx.obj = settings_.Settings.from_env(state_dir=state_dir)


@cli.command()
@output.source_options
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def validate(settings: settings_.Settings, repo: str | None, ref: str | None, path: str | None, fmt: str) -> None:
    """Check every manifest and Rego module of a commit; exit 0 when valid, 1 when not."""
    from reconciler.desired import caching, repository
    from reconciler.reconcile import validating

    started = time.perf_counter()
    source = repository.Repository(repo or settings.repo, cache_dir=settings.cache_dir)
    source.fetch()
    cache = caching.ParseCache(settings.cache_dir)
    snap = validating.validate(
        source,
        ref or settings.ref,
        path or settings.path,
        cache=cache,
        limits=validating.limits_from(settings),
        workers=os.cpu_count() or 1,
    )
    elapsed = time.perf_counter() - started
    if fmt == "json":
        click.echo(json.dumps(output.validation_json(snap, elapsed, cache), indent=2))
    else:
        output.print_validation(snap, elapsed)
    sys.exit(0 if snap.ok else 1)


@cli.command()
@click.option("--kind", type=click.Choice(list(kinds.KIND_NAMES)), default=None, help="Only this kind.")
def schema(kind: str | None) -> None:
    """Print the JSON Schema of the manifests (of one kind with --kind), for editors."""
    from reconciler.desired import models

    click.echo(json.dumps(models.json_schema(kind), indent=2))


def _fail(
    message: str, code: int = 1, *, as_json: bool = False, kind: str = "", problems: list[errors.Problem] | None = None
) -> NoReturn:
    """Report an error and exit: ``Type: message`` on stderr, or under ``--format json`` one
    JSON object on stdout (``{"error": Type, "message": ..., "problems"?: [...]}``, the shape
    ``output.json_errors`` gives), so a script that parses the output gets an object whatever
    happened."""
    if as_json:
        error: dict[str, object] = {"error": kind, "message": message}
        if problems:
            error["problems"] = [p.as_dict() for p in problems]
        click.echo(json.dumps(error, indent=2))
    else:
        click.echo(f"{kind}: {message}" if kind else message, err=True)
    sys.exit(code)


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for ``--format json`` (read before click parses it: the
    error may be click's own)."""
    return any(a == "--format=json" or (a == "--format" and b == "json") for a, b in zip(argv, [*argv[1:], ""], strict=True))


def run(argv: list[str] | None = None) -> None:
    """Entry point of the ``armctl`` console script."""
    as_json = _wants_json(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="armctl", standalone_mode=False)
    except errors.ArmError as exc:
        _fail(str(exc), as_json=as_json, kind=type(exc).__name__, problems=getattr(exc, "problems", None))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # Usage errors exit 1, not click's 2: 2 means "changes" for ``armctl plan``.
        if as_json:
            _fail(exc.format_message(), as_json=True, kind=type(exc).__name__)
        exc.show()
        sys.exit(1)
    except click.exceptions.Abort:
        _fail("Aborted.", as_json=as_json, kind="Aborted" if as_json else "")
    except KeyboardInterrupt:
        _fail("Interrupted.", 130, as_json=as_json, kind="Interrupted" if as_json else "")
    sys.exit(0)
