"""``armctl policy test``: run the Rego unit tests of the library and of a fleet, like ``opa test``,
on the embedded engine or on OPA's own engine (``--engine opa``, when it is installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler import errors
from reconciler import settings as settings_
from reconciler.cli import planview
from reconciler.policy import library, testing

__all__ = ["policy"]


@click.group()
def policy() -> None:
    """Work with the Rego policy: the built-in library plus the fleet's modules."""


@policy.command("test")
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(exists=True),
    help="Fleet Rego files or directories (default: the fleet path).",
)
@click.option(
    "--engine",
    type=click.Choice(testing.ENGINES),
    default="embedded",
    show_default=True,
    help="embedded: regorus, what decisions run on; opa: OPA's own Go engine in process (scripts/install-opa-engine).",
)
@click.option("--verbose", "-v", is_flag=True, help="List every test, not only failures.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def test(settings: settings_.Settings, paths: tuple[str, ...], engine: str, verbose: bool, fmt: str) -> None:
    """Run every *_test.rego of the library and the fleet; exit 1 when any fails."""
    fleet: dict[str, str] = {}
    for given in paths or (settings.path,):
        root = Path(given)
        if not root.exists():
            raise errors.ConfigError(f"{given} does not exist")
        files = [root] if root.is_file() else sorted(root.rglob("*.rego"))
        for file in files:
            try:
                fleet[file.as_posix()] = file.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise errors.ConfigError(f"cannot read {file}: {exc}") from exc
    try:
        results = testing.run_tests(library.modules_for(fleet), engine=engine)
    except errors.ConfigError as exc:  # the OPA engine is not installed: say so in the format asked for
        if fmt != "json":
            raise
        click.echo(planview.dumps({"error": type(exc).__name__, "message": str(exc)}))
        sys.exit(1)
    failed = [r for r in results if r.outcome != "PASS"]
    if fmt == "json":
        click.echo(
            planview.dumps(
                {
                    "engine": engine,
                    "passed": len(results) - len(failed),
                    "failed": len(failed),
                    "results": [r.__dict__ for r in results],
                }
            )
        )
    else:
        for r in results:
            if r.outcome != "PASS" or verbose:
                colour = "green" if r.outcome == "PASS" else "red"
                detail = f": {r.message}" if r.message else ""
                click.echo(f"{click.style(r.outcome, fg=colour)} {r.file}: data.{r.package}.{r.name}{detail}")
        summary = f"PASS: {len(results) - len(failed)}/{len(results)} ({engine} engine)"
        click.echo(("" if not failed else f"FAIL: {len(failed)}/{len(results)}\n") + summary)
    sys.exit(1 if failed or not results else 0)
