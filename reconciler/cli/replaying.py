"""``armctl replay`` and ``armctl state export``: a policy change tried on recorded traffic, and
production's gate state for pull-request plans that have no database access."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler import clock, errors
from reconciler import settings as settings_
from reconciler.cli import output, planview, reconciling
from reconciler.decisions import replaying
from reconciler.policy import replays
from reconciler.reconcile import impacting, statefiles
from reconciler.state import database

__all__ = ["replay", "state"]


@click.command()
@output.source_options
@click.option("--head", "head", required=True, help="The commit whose policy decides the recorded calls again.")
@click.option("--since", default="7d", show_default=True, help="Decisions recorded since then: 7d, 12h, 30m or an ISO 8601 time.")
@click.option("--tenant", default=None, help="Only this tenant's decisions.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.pass_obj
def replay(
    settings: settings_.Settings, repo: str | None, ref: str | None, path: str | None, head: str, since: str,
    tenant: str | None, fmt: str,
) -> None:  # fmt: skip
    """Decide the recorded decisions of the configured database again under the head commit's
    policy (envelopes, catalog, Rego): how many replayed, which could not be and why, and which
    would be decided differently (widening ones marked). Exit 0: none differ, 2: some do."""
    del ref
    moment = replaying.parse_since(since, clock.SystemClock().now())
    reconciler = reconciling.make_reconciler(settings, repo, path)
    side = impacting.side_of_snapshot(reconciler.validated(head))
    replayer = replays.Replayer(side, tenant=tenant)
    with database.reading(reconciler.db) as connection:
        result = replayer.feed(replaying.from_database(connection, moment, tenant)).as_dict()
    result["head"] = side.revision
    code = 2 if result["flips"] else 0
    if fmt == "json":
        click.echo(planview.dumps(result))
    elif fmt == "markdown":
        click.echo(
            "\n".join([f"### ARM replay against `{side.revision}`", "", *planview.replay_markdown(result)]) + "\n", nl=False
        )
    else:
        click.echo(f"Replay of decisions recorded since {since} against {side.revision}")
        planview.print_replay(result)
    raise SystemExit(code)


@click.group()
def state() -> None:
    """Production's gate state as a file (for pull-request plans)."""


@state.command("export")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="The JSON file to write.")
@click.pass_obj
def export_state(settings: settings_.Settings, out: str) -> None:
    """Write the lifecycles, approvals and recorded evaluation runs (no secrets) for
    'armctl plan --base --head --state FILE'."""
    db = reconciling.running.open_database(settings.database)
    with database.reading(db) as connection:
        doc = statefiles.export(connection)
    target = Path(out)
    try:
        target.write_text(planview.dumps(doc) + "\n", encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"--out {out}: cannot write it: {exc.strerror or exc}") from exc
    click.echo(
        f"Wrote {target}: {len(doc['lifecycles'])} versions, {len(doc['approvals'])} approvals, "
        f"{len(doc['evaluations'])} evaluation runs (revision {doc['appliedSha'] or 'none applied'})."
    )
