"""``armctl init | plan | apply | status | history``: the reconcile as a user drives it."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from reconciler import clock as clock_
from reconciler import errors
from reconciler import settings as settings_
from reconciler.cli import keying, output, planview
from reconciler.decisions import replaying
from reconciler.desired import caching, repository
from reconciler.evidence import recording, retention
from reconciler.policy import impact, library, replays, testing
from reconciler.reconcile import impacting, reporting, running, statefiles, validating
from reconciler.state import database

__all__ = ["apply", "history", "init", "plan", "status"]


def make_reconciler(
    settings: settings_.Settings,
    repo: str | None,
    path: str | None,
    db: database.Engine | None = None,
    *,
    workers: int | None = None,
    sign: bool = False,
    fetch: bool = True,
    keep_documents: bool = False,
) -> running.Reconciler:
    """A reconciler over the configured (or given) repository; ``workers`` parse processes for a
    cold load (default: one per core; a threaded process such as the daemon must pass 1); with
    ``sign``, its applies write signed chain checkpoints (the key made on first use). Without
    ``fetch`` a remote is neither cloned nor fetched here: the daemon's first poll does it, so it
    serves from its mirror while the remote is down. With ``keep_documents`` its parse cache
    keeps every document it parses (for a command that applies a whole commit to a scratch
    database, so the next run reads none of them again)."""
    db = db or running.open_database(settings.database)
    source = repository.Repository(repo or settings.repo, cache_dir=settings.cache_dir, clone=fetch)
    if fetch:
        source.fetch()
    return running.Reconciler(
        db,
        source,
        path or settings.path,
        cache=caching.ParseCache(settings.cache_dir, keep_documents=keep_documents),
        limits=validating.limits_from(settings),
        workers=workers or os.cpu_count() or 1,
        signer=keying.signer(settings) if sign else None,
    )


@click.command()
@click.pass_obj
def init(settings: settings_.Settings) -> None:
    """Create the database schema, or upgrade it to this version's."""
    engine = database.connect(settings.database)
    before, after = database.migrate(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"Database {where} is up to date (schema {after}).")
    else:
        click.echo(f"Database {where}: schema {before or 'none'} → {after}.")


@click.command()
@output.source_options
@click.option(
    "--base",
    default=None,
    help="Pull-request mode: apply this commit to a scratch database and plan against it (the configured one is not used).",
)
@click.option("--head", default=None, help="With --base: the commit to plan (default --ref).")
@click.option(
    "--evidence",
    "evidence",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --base: evaluation runs (JSON, as GET /v1/evaluations answers) the scratch database starts with.",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --base: production's state ('armctl state export'): its approvals, runs and lifecycles, so gates are the real ones.",
)
@click.option(
    "--replay",
    "replay_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Recorded decisions ('armctl events export') to replay against the head: their flips join the decision impact.",
)
@click.option("--no-impact", is_flag=True, help="Leave out the decision impact (base against head decisions).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.pass_obj
def plan(
    settings: settings_.Settings, repo: str | None, ref: str | None, path: str | None, base: str | None, head: str | None,
    evidence: str | None, state_file: str | None, replay_file: str | None, no_impact: bool, fmt: str,
) -> None:  # fmt: skip
    """Show what applying a commit would change, and which tool-call decisions it flips. Exit 0:
    no changes, 2: changes (objects, or decisions the impact or a replay flips), 1: error (or,
    with --base, a failing Rego unit test)."""
    if head is not None and base is None:
        raise errors.ConfigError("--head needs --base: without it the plan is against the configured database")
    if evidence is not None and base is None:
        raise errors.ConfigError("--evidence needs --base: without it the plan reads the runs of the configured database")
    if state_file is not None and base is None:
        raise errors.ConfigError("--state needs --base: without it the plan is against the configured database")
    runs = _read_evidence(evidence) if evidence is not None else None
    if replay_file is not None and not os.access(replay_file, os.R_OK):
        raise errors.ConfigError(f"--replay {replay_file}: cannot read it (write it with 'armctl events export')")
    state_doc = statefiles.read(state_file) if state_file is not None else None
    target = head or ref or settings.ref
    tests: list[testing.TestResult] | None = None
    impact_report: dict[str, Any] | None = None
    replay_report: dict[str, Any] | None = None
    if base is None:
        reconciler = make_reconciler(settings, repo, path)
        outcome = reconciler.plan(target)
        assert outcome.desired is not None
        head_side = impacting.side_of_snapshot(outcome.desired)
        if not no_impact:
            with database.reading(reconciler.db) as connection:
                base_side = impacting.side_of_database(connection)
            impact_report = impact.probe(base_side, head_side, workers=os.cpu_count() or 1).as_dict()
    else:
        with tempfile.TemporaryDirectory(prefix="arm-plan-") as scratch:
            db = database.connect(f"sqlite:///{Path(scratch) / 'scratch.db'}")
            try:
                database.migrate(db)
                if runs is not None or state_doc is not None:
                    with database.transaction(db) as connection:
                        if runs is not None:
                            recording.import_runs(connection, runs, str(evidence))
                        if state_doc is not None:
                            statefiles.import_before(connection, state_doc, str(state_file))
                reconciler = make_reconciler(settings, repo, path, db, keep_documents=True)
                reconciler.repo.resolve(base)  # a base that does not exist is that, not a failed apply
                try:
                    reconciler.apply(base)
                except errors.ArmError:
                    click.echo(f"The base commit {base} does not apply to an empty database:", err=True)
                    raise
                if state_doc is not None:
                    with database.transaction(db) as connection:
                        statefiles.import_after(connection, state_doc)
                base_snap = reconciler.validated(base)
                base_side = impacting.side_of_snapshot(base_snap)
                outcome = reconciler.plan(target)
                assert outcome.desired is not None
                head_side = impacting.side_of_snapshot(outcome.desired)
                if not no_impact:
                    impact_report = impact.probe(base_side, head_side, workers=os.cpu_count() or 1).as_dict()
            finally:
                db.dispose()
        tests = testing.run_tests(library.modules_for(outcome.rego))
    if replay_file is not None:
        replay_report = replays.Replayer(head_side).feed(replaying.from_file(replay_file)).as_dict()
    assert outcome.plan is not None
    if base is not None and state_doc is None:
        planview.hide_scratch_approvals(outcome.plan)
    failed = [t for t in tests or () if t.outcome != "PASS"]
    # A commit that flips decisions changes what agents may do, whether or not an object changes.
    decisions_change = bool(impact_report and impact_report["changed"]) or bool(replay_report and replay_report["changed"])
    code = 1 if failed else 2 if outcome.plan.actions or decisions_change else 0
    if fmt == "json":
        report = planview.plan_json(outcome.plan, code)
        if tests is not None:
            report["regoTests"] = {"passed": len(tests) - len(failed), "failed": [t.__dict__ for t in failed]}
        if impact_report is not None:
            report["impact"] = impact_report
        if replay_report is not None:
            report["replay"] = replay_report
        if base is not None:
            report["gates"] = "state" if state_doc is not None else "scratch"
        click.echo(planview.dumps(report))
    elif fmt == "markdown":
        click.echo(
            planview.plan_markdown(
                outcome.plan, base=base, tests=tests, evidence=runs is not None, impact=impact_report, replay=replay_report,
                real_state=state_doc is not None, decisions_change=decisions_change,
            ),
            nl=False,
        )  # fmt: skip
    else:
        planview.print_plan(outcome.plan, decisions_change=decisions_change)
        if impact_report is not None:
            planview.print_impact(impact_report)
            planview.print_governed(impact_report)
        if replay_report is not None:
            planview.print_replay(replay_report)
        if tests is not None:
            planview.print_tests(tests)
    sys.exit(code)


def _read_evidence(path: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise errors.ConfigError(f"--evidence {path}: cannot read it: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"--evidence {path}: not JSON: {exc}") from exc


@click.command()
@output.source_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def apply(settings: settings_.Settings, repo: str | None, ref: str | None, path: str | None, fmt: str) -> None:
    """Make the database match a commit, in one transaction; record every change (and sign a
    checkpoint of each audit chain it moved)."""
    reconciler = make_reconciler(settings, repo, path, sign=True)
    outcome = reconciler.apply(ref or settings.ref)
    if fmt == "json":
        report: dict[str, Any] = {
            "outcome": outcome.outcome,
            "revision": outcome.revision,
            "records": outcome.records,
            "runId": outcome.run_id,
            "seconds": round(outcome.seconds, 4),
        }
        if outcome.plan is not None:
            report |= {"counts": outcome.plan.counts(), "waiting": [c.as_dict() for c in outcome.plan.conditions]}
        click.echo(planview.dumps(report))
        return
    if outcome.outcome == "WAITING":
        assert outcome.plan is not None
        click.echo(f"{outcome.revision} is not applied: it waits for approval of its policy change.")
        for c in outcome.plan.conditions:
            if c.kind == "PolicyChange":
                click.echo(f"  … {c.tenant}: {c.message}")
        click.echo("Approve with 'armctl approvals approve ID', then apply again.")
        return
    if outcome.outcome == "UNCHANGED":
        click.echo(f"{outcome.revision} is already applied; nothing to do ({outcome.seconds * 1000:.0f} ms).")
        _print_rollouts(outcome)
        return
    assert outcome.plan is not None
    if outcome.plan.actions:
        planview.print_plan(outcome.plan)
    click.echo(
        click.style("\n✓ applied ", fg="green")
        + f"{outcome.revision}: {output.plural(len(outcome.plan.actions), 'change')}, {output.plural(outcome.records, 'change record')},"
        f" run {outcome.run_id} ({outcome.seconds:.2f} s)"
    )
    waiting = [c for c in outcome.plan.conditions if c.type == "Waiting"]
    if waiting and not outcome.plan.actions:
        click.echo(
            f"{output.plural(len(waiting), 'object')} {'waits' if len(waiting) == 1 else 'wait'} on gates: see 'armctl status'."
        )
    _print_rollouts(outcome)


def _print_rollouts(outcome: running.Outcome) -> None:
    """Where canary rollouts stand: each ``armctl apply`` takes at most one step of each."""
    for c in outcome.plan.conditions if outcome.plan is not None else ():
        if c.type in ("Progressing", "Halted", "RolledBack"):
            click.echo(f"Deployment {c.name}: {c.message}")


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def status(settings: settings_.Settings, fmt: str) -> None:
    """The applied revision, the last reconcile runs, waiting gates and held drift, and what is
    kept where (op events, their archives, change records, checkpoints)."""
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        report = reporting.status(connection)
        report["retention"] = retention.summary(connection, retention_policy(settings))
    if fmt == "json":
        click.echo(planview.dumps(report))
        return
    output.print_status(report)
    output.print_retention(report["retention"])


def retention_policy(settings: settings_.Settings) -> retention.Policy:
    return retention.Policy(
        settings.op_event_retention_days, settings.archive_retention_days, settings.archive_dir,
        settings.checkpoint_interval_seconds,
    )  # fmt: skip


@click.command()
@click.option("--sha", default=None, help="Only records of this commit (a prefix is enough).")
@click.option("--kind", default=None, help="Only this object kind (AgentVersion, Deployment, Instance, ...).")
@click.option("--name", default=None, help="Only this object.")
@click.option("--type", "type_", default=None, help="Only this record type (VERSION_TRANSITIONED, ...).")
@click.option("--tenant", default=None)
@click.option("--since", default=None, help="ISO 8601 time.")
@click.option("--until", default=None, help="ISO 8601 time.")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="Keep the newest this many matching records."
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def history(settings: settings_.Settings, sha: str | None, kind: str | None, name: str | None, type_: str | None,
            tenant: str | None, since: str | None, until: str | None, limit: int, fmt: str) -> None:  # fmt: skip
    """Change records, oldest first, filtered by commit, object, type and time: the newest
    --limit of those that match (a note on stderr says when the limit cut older ones)."""
    db = running.open_database(settings.database)
    with database.reading(db) as connection:
        rows = reporting.history(
            connection,
            sha=sha,
            kind=kind,
            name=name,
            type_=type_,
            tenant=tenant,
            since=clock_.parse_time(since) if since else None,
            until=clock_.parse_time(until) if until else None,
            limit=limit,
        )
    if fmt == "json":
        click.echo(planview.dumps(rows))
        return
    for row in rows:
        who = row["operator"] or row["author"] or "-"
        sha_text = (row["sha"] or "api")[:12]
        click.echo(f"{row['at'][:19]}  {sha_text:12}  {row['type']:24} {row['object_kind']}/{row['object_name']}  by {who}")
    if not rows:
        click.echo("No change records match.")
    elif len(rows) == limit:
        click.echo(
            f"(the newest {limit} matching records, oldest first; older ones may exist: raise --limit or narrow with --since)",
            err=True,
        )
