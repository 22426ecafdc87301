"""How ``armctl`` shows things: human text (coloured on a terminal), JSON, and log set-up.

Kept apart from the commands so every command formats objects, problems and revisions the same
way. Logs go to stderr through stdlib logging, plain or JSON (``--log-format``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import click

from reconciler import errors
from reconciler.desired import caching, snapshot

__all__ = ["configure_logging", "json_errors", "plural", "print_table", "print_validation", "validation_json"]


class _JsonFormatter(logging.Formatter):
    _SKIP: ClassVar[frozenset[str]] = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in self._SKIP and not k.startswith("_")})
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class _StripCredentials(logging.Filter):
    """Credentials in URLs (``https://user:token@host``) never reach a log line."""

    _URL = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/\s@]+@")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message and "://" in message:
            record.msg, record.args = self._URL.sub(r"\1***@", message), None
        return True


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_StripCredentials())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The scheduler logs every job run at INFO ("Running job ...", "executed successfully"):
    # at --log-level info that drowned what the daemon itself says. Its warnings (a missed or
    # failed job) still show; --log-level debug shows everything.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def commit_json(snap: snapshot.Snapshot) -> dict[str, Any]:
    c = snap.commit
    return {
        "sha": c.sha,
        "author": f"{c.author_name} <{c.author_email}>",
        "authoredAt": dt.datetime.fromtimestamp(c.authored_at, dt.UTC).isoformat(),
        "summary": c.summary,
    }


def validation_json(snap: snapshot.Snapshot, elapsed: float, cache: caching.ParseCache) -> dict[str, Any]:
    return {
        "valid": snap.ok,
        "source": snap.source,
        "path": snap.path,
        "revision": snap.revision,
        "commit": commit_json(snap),
        "counts": snap.counts(),
        "files": snap.files,
        "problems": [p.as_dict() for p in _in_order(snap.problems)],
        "warnings": [w.as_dict() for w in snap.warnings],
        "seconds": round(elapsed, 4),
        "cache": {"hits": cache.hits, "misses": cache.misses},
    }


def print_validation(snap: snapshot.Snapshot, elapsed: float) -> None:
    c = snap.commit
    click.echo(f"Fleet {snap.path}/ of {snap.source} at {click.style(snap.revision, bold=True)}")
    click.echo(f"  commit by {c.author_name} <{c.author_email}>: {c.summary}")
    counts = snap.counts()
    click.echo("  " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    if snap.ok:
        click.echo(click.style("✓ valid", fg="green") + f" ({snap.files} files in {elapsed:.2f} s)")
    else:
        n = len(snap.problems)
        click.echo(click.style(f"✗ {n} problem{'s' if n != 1 else ''}", fg="red", bold=True))
        for problem in _in_order(snap.problems):
            click.echo(f"  {click.style(problem.where(), bold=True)}: {problem.message}")
    if snap.warnings:
        n = len(snap.warnings)
        click.echo(click.style(f"! {n} warning{'s' if n != 1 else ''}", fg="yellow", bold=True))
        for warning in snap.warnings:
            click.echo(f"  {click.style(warning.where(), bold=True)}: {warning.message}")


def print_status(report: dict[str, Any]) -> None:
    applied = report["appliedRevision"]
    if applied is None:
        click.echo("Nothing applied yet: run 'armctl apply'.")
    else:
        click.echo(
            f"Applied {click.style(applied, bold=True)} at {report['appliedAt']} from {report['source']} ({report['path']}/)"
        )
    for condition in report.get("fleetConditions", []):
        good = (condition["status"] == "True") == (condition["type"] == "Ready")
        click.echo(
            f"  {condition['type']:11} {click.style(condition['status'], fg='green' if good else 'red')}  "
            f"{condition['reason']}: {condition['message']}"
        )
    if report["pendingOutOfGitChanges"]:
        click.echo(
            f"  {report['pendingOutOfGitChanges']} change(s) made outside Git since (approvals, controls): the next apply takes them into account"
        )
    objects = ", ".join(f"{n} {kind}" for kind, n in report["objects"].items() if n)
    click.echo(f"  objects: {objects or 'none'}")
    if report["versionsByLifecycle"]:
        click.echo("  versions: " + ", ".join(f"{n} {state}" for state, n in sorted(report["versionsByLifecycle"].items())))
    if report["instancesByState"]:
        click.echo("  instances: " + ", ".join(f"{n} {state}" for state, n in sorted(report["instancesByState"].items())))
    click.echo(f"  approvals pending: {report['approvalsPending']}")
    if report["lastRuns"]:
        click.echo(click.style("\nLast reconcile runs", bold=True))
        for run in report["lastRuns"]:
            colour = {"APPLIED": "green", "NOOP": "green", "FAILED": "red"}.get(run["outcome"], "yellow")
            sha = (run["sha"] or "")[:12]
            click.echo(
                f"  #{run['id']} {click.style(run['outcome'], fg=colour):8} {sha} {run['startedAt']} ({plural(run['actions'], 'change')})"
            )
            for error in run["errors"][:10]:
                where = error.get("file", "")
                if error.get("line"):
                    where += f":{error['line']}"
                click.echo(f"      {where}: {error.get('message', '')}")
    if report.get("rollouts"):
        click.echo(click.style("\nCanary rollouts", bold=True))
        for r in report["rollouts"]:
            colour = "red" if r["rollout"] == "HALTED" else "yellow"
            click.echo(
                f"  Deployment {r['name']}: {r['previousVersion']} → {r['version']} at {r['weight']}% "
                f"(step {r['step']} of {r['steps']}) {click.style(r['rollout'], fg=colour)}"
            )
    if report["conditions"]:
        click.echo(click.style("\nWaiting or held", bold=True))
        for c in report["conditions"]:
            click.echo(f"  {c['kind']} {c['name']}: {c['type']} ({c['reason']}) {c['message']}")


def print_retention(kept: dict[str, Any]) -> None:
    """What ``armctl status`` says is kept where."""
    db, archives, records, checkpoints = kept["database"], kept["archives"], kept["changeRecords"], kept["checkpoints"]
    click.echo(click.style("\nKept where", bold=True))
    since = f", oldest {db['oldestOpEvent'][:19]}" if db["oldestOpEvent"] else ""
    click.echo(f"  op events: {db['opEvents']} in the database for {kept['opEventRetentionDays']} days{since}")
    oldest = f", oldest event {archives['oldestEvent'][:19]}" if archives["oldestEvent"] else ""
    click.echo(
        f"  then archived: {archives['files']} files ({archives['events']} events, {archives['bytes']} bytes) in "
        f"{archives['directory']}/ for {kept['archiveRetentionDays']} days{oldest}; "
        f"{archives['deletedAfterRetention']} deleted after their retention"
    )
    click.echo(f"  change records: {records['count']} in the database, never deleted")
    last = f", last {checkpoints['last'][:19]}" if checkpoints["last"] else ""
    click.echo(
        f"  signed checkpoints: {checkpoints['count']} in the database, never deleted{last} "
        f"(every apply and every {kept['checkpointIntervalSeconds']:g} s under 'armctl run')"
    )


@contextlib.contextmanager
def json_errors(fmt: str) -> Iterator[None]:
    """With ``--format json``, a refusal is JSON too: ``{"error": Type, "message": ...}`` on
    stdout and exit 1, where a machine reads the answer; otherwise ``main.run`` prints it."""
    try:
        yield
    except errors.ArmError as exc:
        if fmt != "json":
            raise
        click.echo(json.dumps({"error": type(exc).__name__, "message": str(exc)}, indent=2))
        sys.exit(1)


def source_options(func: Any) -> Any:
    func = click.option(
        "--path", "path", default=None, help="Fleet directory inside the repository (env ARM_PATH, default fleet)."
    )(func)
    func = click.option("--ref", default=None, help="Branch, tag or SHA (env ARM_REF, default HEAD).")(func)
    func = click.option("--repo", default=None, help="Repository: local path or Git URL (env ARM_REPO, default .).")(func)
    return func


def _in_order(problems: list[errors.Problem]) -> list[errors.Problem]:
    """By file, document and line: the order a reader fixes them in."""
    return sorted(problems, key=lambda p: (p.file, -1 if p.document is None else p.document, p.line or 0))


def plural(count: int, noun: str) -> str:
    """``1 replica``, ``2 replicas``: counts read as English (nouns here take an ``s``)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, under a header line."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
