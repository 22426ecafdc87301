"""``armctl audit verify``: recompute genome hashes and the change-record chain, and check every
evaluation run against the record written with it."""

from __future__ import annotations

import sys

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.audit import chain, integrity
from reconciler.cli import planview
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Check the audit trail and stored genomes."""


@audit.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def verify(settings: settings_.Settings, fmt: str) -> None:
    """Re-hash every stored genome and every change record, and check every evaluation run
    against its EVALUATION_RECORDED record; exit 1 naming the first break.

    A tampered genome is marked FAILED (it can no longer be deployed) and recorded as
    VERSION_INTEGRITY_FAILED the first time it is found.
    """
    db = running.open_database(settings.database)
    with database.transaction(db) as connection:
        tampered = integrity.verify_genomes(connection, clock.SystemClock().now())
        breaks = list(chain.verify(connection))
        records = connection.execute(chain.count_query()).scalar_one()
        altered = integrity.verify_runs(connection)
    ok = not tampered and not breaks and not altered
    if fmt == "json":
        click.echo(
            planview.dumps(
                {
                    "ok": ok,
                    "records": records,
                    "chainBreaks": [b.__dict__ for b in breaks],
                    "tamperedGenomes": [t.__dict__ for t in tampered],
                    "alteredRuns": [a.__dict__ for a in altered],
                }
            )
        )
    else:
        for t in tampered:
            note = "newly found, recorded VERSION_INTEGRITY_FAILED" if t.newly_found else "already marked FAILED"
            click.echo(f"✗ genome of {t.tenant}/{t.name} hashes to {t.computed_hash}, stored {t.stored_hash} ({note})")
        if breaks:
            first = breaks[0]
            click.echo(
                f"✗ change record chain of tenant {first.tenant} breaks at record {first.seq} (id {first.id}): {first.reason}"
            )
            for b in breaks[1:]:
                click.echo(f"  also: tenant {b.tenant} record {b.seq} (id {b.id}): {b.reason}")
        for a in altered:
            click.echo(f"✗ evaluation run {a.run} of tenant {a.tenant} {a.reason}")
        if ok:
            click.echo(
                click.style("✓ ", fg="green")
                + f"{records} change records chain correctly; every stored genome matches its hash; every evaluation run matches its record"
            )
    sys.exit(0 if ok else 1)
