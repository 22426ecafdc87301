"""``armctl eval submit | list``: evaluation runs, the evidence gates read.

``submit`` records a run as the Operator named with ``--as`` (its roles must grant
``evaluations:submit``), through :mod:`reconciler.evidence.recording` — the code
``POST /v1/evaluations`` runs — so it is bound to the version's genome hash, checked against the
suite, chained and, for a failing safety or regression run of a deployed version, followed by
continuous evaluation's restriction, exactly as over HTTP. CI pipelines submit over HTTP with a
``ci`` token instead (``armctl token create --kind ci``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from reconciler import clock
from reconciler import settings as settings_
from reconciler.cli import output, planview
from reconciler.evidence import judging, recording, scorecards
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["eval_"]

FORMATS = click.Choice(["text", "json"])


def _metric(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            parsed = float(number)
        except ValueError:
            parsed = math.nan
        if not sep or not name.strip() or not math.isfinite(parsed):
            raise click.BadParameter(f"{value!r}: give each metric as NAME=VALUE with a finite number (e.g. pass_rate=0.97)")
        if name.strip() in metrics:
            raise click.BadParameter(f"metric {name.strip()!r} is given twice", ctx, param)
        metrics[name.strip()] = parsed
    return metrics


def _details(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", ctx, param) from exc


@click.group("eval")
def eval_() -> None:
    """Submit and list evaluation runs (the evidence promotion gates read)."""


@eval_.command("submit")
@click.option("--version", "version", required=True, metavar="NAME", help="The AgentVersion measured (metadata.name).")
@click.option("--suite", required=True, metavar="SUITE", help="The EvaluationSuite run (metadata.name).")
@click.option(
    "--metric", "metrics", multiple=True, required=True, callback=_metric, metavar="NAME=VALUE",
    help="A metric of the suite and its value (rates between 0 and 1); repeat for each metric.",
)  # fmt: skip
@click.option("--samples", required=True, type=click.IntRange(0, recording.MAX_SAMPLES), help="How many cases the run measured.")
@click.option("--run-url", default=None, metavar="URL", help="Where the run's report lives.")
@click.option("--details", default=None, callback=_details, metavar="JSON", help="A JSON object kept with the run.")
@click.option(
    "--genome-hash", default=None, metavar="HASH", help="The genome the harness evaluated; refused unless it is the version's."
)
@click.option("--tenant", default=None, help="The version's tenant (needed only when several tenants have that name).")
@click.option("--as", "operator", required=True, metavar="OPERATOR", help="The Operator submitting (needs evaluations:submit).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def submit(
    settings: settings_.Settings, version: str, suite: str, metrics: dict[str, float], samples: int, run_url: str | None,
    details: Any, genome_hash: str | None, tenant: str | None, operator: str, fmt: str,
) -> None:  # fmt: skip
    """Record a run of SUITE for VERSION, bound to its genome hash, as OPERATOR."""
    with output.json_errors(fmt), database.transaction(running.open_database(settings.database)) as connection:
        tenant = scorecards.tenant_of(connection, version, tenant)
        recorded = recording.submit(
            connection,
            tenant,
            recording.Submitter("operator", operator),
            version=version,
            suite=suite,
            metrics=metrics,
            samples=samples,
            run_url=run_url,
            details=details,
            genome_hash=genome_hash,
            now=clock.SystemClock().now(),
        )
    if fmt == "json":
        click.echo(
            planview.dumps(
                {
                    "run": recorded.run,
                    "evidence": recorded.verdict.as_dict(),
                    "deployed": recorded.deployed,
                    "restricted": [{"instance": c.instance, "before": c.before, "after": c.after} for c in recorded.restricted],
                    "unrestricted": [{"instance": c.instance, "state": c.before} for c in recorded.left],
                }
            )
        )
        return
    run, verdict = recorded.run, recorded.verdict
    click.echo(
        f"Recorded run {run['id']} of {run['category']} suite {suite} for {version} ({run['genomeHash']}) by {run['submitter']}."
    )
    print_values(verdict)
    colour = {"passing": "green", "failing": "red"}.get(verdict.status, "yellow")
    click.echo(f"Evidence: {click.style(verdict.status, fg=colour, bold=True)}: {verdict.summary}")
    if recorded.restricted:
        held = ", ".join(f"{c.instance} {c.before} → {c.after}" for c in recorded.restricted)
        click.echo(
            f"Continuous evaluation: {version} is deployed; held {held}. An operator resumes them "
            "('armctl instance resume ID'); a passing run does not."
        )
    elif verdict.status == "failing" and recorded.deployed and run["category"] in ("safety", "regression"):
        click.echo(f"Continuous evaluation: {version} is deployed; EVALUATION_FAILED recorded, no instance held.")
    click.echo("The next reconcile reads it: 'armctl apply' (the daemon: its next poll).")


def print_values(verdict: judging.Verdict, indent: str = "  ") -> None:
    """One line per metric: its value, the bar, and the baseline it was compared with."""
    for v in verdict.values:
        if v["value"] is None:
            click.echo(f"{indent}{v['metric']}: not reported")
            continue
        unit = v["unit"]
        bar = judging.format_value(v["threshold"], unit, exact=True)
        bar = f"≥ {bar}" if v["direction"] == "higher" else f"≤ {bar}"
        line = f"{indent}{v['metric']}: {judging.format_value(v['value'], unit)} (needs {bar}"
        if v["effective"] is not None and v["effective"] != v["value"]:
            line += f"; judged at the Wilson bound {judging.format_value(v['effective'], unit)}"
        line += ")"
        if "baseline" in v:
            line += f", baseline {judging.format_value(v['baseline'], unit)}"
        mark = click.style("✓", fg="green") if v["passes"] else click.style("✗", fg="red")
        click.echo(f"{line} {mark}")


@eval_.command("list")
@click.option("--version", "version", default=None, metavar="NAME", help="Only this version's runs.")
@click.option("--suite", default=None, metavar="SUITE", help="Only this suite's runs.")
@click.option("--tenant", default=None, help="Only this tenant's runs.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="The newest this many.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def list_(settings: settings_.Settings, version: str | None, suite: str | None, tenant: str | None, limit: int, fmt: str) -> None:
    """Recorded evaluation runs, oldest first: version, genome hash, suite, metrics, submitter."""
    with output.json_errors(fmt), database.reading(running.open_database(settings.database)) as connection:
        rows = recording.list_runs(connection, tenant=tenant, version=version, suite=suite, limit=limit)
    if fmt == "json":
        click.echo(planview.dumps(rows))
        return
    if not rows:
        click.echo("No evaluation runs match.")
        return
    for r in rows:
        values = ", ".join(f"{name}={value:g}" for name, value in r["metrics"].items())
        click.echo(
            f"#{r['id']:<5} {r['at'][:19]}  {r['version']:28} {r['suite']:24} {r['verdict']:8} "
            f"{r['samples']} samples  {values}  by {r['submitter']}"
        )
