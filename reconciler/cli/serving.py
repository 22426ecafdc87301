"""``armctl run`` (the daemon) and ``armctl serve`` (the HTTP API alone)."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
from typing import Any

import click

from reconciler import settings as settings_
from reconciler.cli import keying, output
from reconciler.reconcile import running

__all__ = ["run", "serve"]

#: Decisions hop between the event loop and worker threads: a short GIL switch interval keeps
#: one busy thread (a reconcile, a commit) from holding the others' answers for the default 5 ms.
_SWITCH_INTERVAL = 0.0005


def _tune_process() -> None:
    """Settings for a long-running server process, applied once it is built."""
    sys.setswitchinterval(_SWITCH_INTERVAL)
    # What is loaded by now (modules, the application, the database metadata) lives as long as the
    # process: moved out of the collector's reach (after one last collection of start-up garbage),
    # a full collection walks only what requests made. Measured under decision load: full
    # collections of 35-60 ms became 8-19 ms, and 4-9 ms with the ledger's calls as floats.
    gc.collect()
    gc.freeze()


def _stop_on_signals(server: Any) -> None:
    """SIGTERM and SIGINT (Ctrl-C) stop the server and the process exits 0.

    uvicorn handles both while it serves (stops taking requests, answers those in flight) and
    afterwards raises the signal again for the previous handler: this one, which only asks the
    server to stop, so the process exits 0 — also when the signal comes before serving starts
    (the default handlers would end it by the signal, or click would turn Ctrl-C into "Aborted.").
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: setattr(server, "should_exit", True))


def _http_options(application: Any, settings: settings_.Settings) -> dict[str, Any]:
    from reconciler.server import protocol

    return protocol.options(application, idle_poll_seconds=settings.idle_poll_microseconds / 1e6)


@click.command()
@output.source_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--poll-interval", type=click.FloatRange(0.1), default=None, help="Seconds (env ARM_POLL_INTERVAL_SECONDS, default 30)."
)
@click.pass_obj
def run(
    settings: settings_.Settings, repo: str | None, ref: str | None, path: str | None, host: str, port: int,
    poll_interval: float | None,
) -> None:  # fmt: skip
    """Run the daemon: follow the fleet repository (poll and webhook), reconcile it, and serve the
    HTTP API. SIGTERM finishes the running reconcile, answers what is in flight and exits 0."""
    import uvicorn

    from reconciler.cli import deciding as deciding_cli
    from reconciler.cli import reconciling
    from reconciler.daemon import scheduling
    from reconciler.decisions import deciding
    from reconciler.reconcile import simulating
    from reconciler.server import app
    from reconciler.state import locking

    overrides: dict[str, Any] = {"repo": repo, "ref": ref, "path": path, "poll_interval_seconds": poll_interval}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    db = running.open_database(settings.database)
    leadership = locking.for_database(db)
    leadership.acquire()  # on SQLite: refuse now if another daemon holds the database
    try:
        # One parse process: forking a process that runs threads (scheduler, server, writer) can
        # copy a held lock into the child and hang it. The parse cache makes restarts warm anyway.
        reconciler = reconciling.make_reconciler(settings, None, None, db, workers=1, sign=True, fetch=False)
        decider = deciding.Decider(db, engine=deciding_cli.policy_engine(settings), group_commit=True)
        daemon = scheduling.Daemon(settings, db, reconciler, decider, leadership=leadership)
        application = app.create_app(
            db, decider=decider, sweep_seconds=None, policy_seconds=0.5, runner=daemon, signer=reconciler.signer,
            source=simulating.Source(lambda: reconciler.repo, reconciler.path),
        )  # fmt: skip
        server = uvicorn.Server(
            uvicorn.Config(
                application, host=host, port=port, timeout_graceful_shutdown=10, **_http_options(application, settings)
            )
        )
        _tune_process()
        _stop_on_signals(server)
        click.echo(
            f"armctl run: serving http://{host}:{port}, following {settings.ref} of {reconciler.repo.display} "
            f"every {settings.poll_interval_seconds:g} s ({'leader' if leadership.leading else 'follower'})",
            err=True,
        )
        daemon.start()
        clean = False
        try:
            server.run()
        finally:
            clean = daemon.stop()
    finally:
        leadership.release()
    if not clean:
        # A job thread is stuck (a Git host that does not answer) and would keep the interpreter
        # from exiting; its open transaction rolls back when the process ends.
        click.echo("armctl run: stopped without waiting for a stuck reconcile", err=True)
        logging.shutdown()
        os._exit(1)
    if not server.started:
        raise SystemExit(1)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.pass_obj
def serve(settings: settings_.Settings, host: str, port: int) -> None:
    """Serve the HTTP API (decisions, approvals, controls, events, status) on HOST:PORT, without
    reconciling (see 'armctl run')."""
    import uvicorn

    from reconciler.cli import deciding as deciding_cli
    from reconciler.decisions import deciding
    from reconciler.desired import repository
    from reconciler.reconcile import simulating
    from reconciler.server import app

    db = running.open_database(settings.database)
    decider = deciding.Decider(db, engine=deciding_cli.policy_engine(settings), group_commit=True)
    # The console's simulator reads other refs of the configured repository (opened on first use).
    source = simulating.Source(lambda: repository.Repository(settings.repo, cache_dir=settings.cache_dir), settings.path)
    application = app.create_app(db, decider=decider, signer=keying.signer(settings), source=source)
    server = uvicorn.Server(uvicorn.Config(application, host=host, port=port, **_http_options(application, settings)))
    _tune_process()
    _stop_on_signals(server)
    click.echo(f"armctl serve: serving http://{host}:{port} from {db.url.render_as_string(hide_password=True)}", err=True)
    try:
        server.run()
    finally:
        decider.close()  # stores the decisions still queued
    if not server.started:
        raise SystemExit(1)
