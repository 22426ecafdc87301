"""The daemon's jobs on an APScheduler ``BackgroundScheduler``: poll, canary, sweeps, retention.

``Daemon`` owns one :class:`running.Reconciler` and runs, each job one at a time (missed runs
coalesced into one):

- **poll** (every ``poll_interval_seconds`` plus up to ``poll_jitter_seconds``): fetch the remote
  and apply the followed ref; a webhook runs it at once. A commit that fails keeps the last good
  one in force; the failure shows in status and metrics. A remote that cannot be reached is a
  failure too, but the ref is still applied from the mirror on disk (the first clone happens
  here, not at start-up, so a daemon serves the store's commit while the remote is down).
- **canary** (every ``canary_step_seconds``): one reconcile that may take the next canary step.
- **approvals**: expire and escalate approval requests.
- **heartbeats**: mark instances not heard from for their environment's
  ``heartbeatTimeoutSeconds`` (else ``heartbeat_timeout_seconds``) UNHEALTHY, every third of the
  shortest of them.
- **retention**: archive op events past the retention to gzipped JSON Lines, then delete them;
  delete archives past the archive retention (both listed in a signed checkpoint).
- **notifications** (every ``notify_interval_seconds``): deliver the notification outbox's rows
  that are due (``notifications.delivering``), retrying failed ones with backoff.
- **checkpoints** (every ``checkpoint_interval_seconds``): re-hash the stored genomes, then sign a
  checkpoint of every tenant's change-record chain that moved (``evidence.checkpoints``).

Only the leader (``leading``) runs them; a follower's poll tries to take the lead, and otherwise
only follows the applied commit, which it serves like the leader. The server calls
``readiness``, ``status``, ``metrics`` and ``webhook``; ``stop`` waits for a running reconcile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler import clock as clock_
from reconciler import errors, metrics
from reconciler import settings as settings_
from reconciler.audit import integrity
from reconciler.daemon import hooks
from reconciler.decisions import deciding, events
from reconciler.evidence import checkpoints, retention
from reconciler.notifications import delivering
from reconciler.oversight import approving
from reconciler.reconcile import running
from reconciler.state import database, locking

__all__ = ["GIT_STOP_SECONDS", "STOP_GRACE_SECONDS", "Daemon"]

#: How long a stop waits for a running reconcile before it leaves it (Kubernetes waits 30 s).
STOP_GRACE_SECONDS = 25.0
#: How long a stop lets a clone or fetch talk to the Git host before it kills it: long enough for
#: a first clone on a busy host to finish (its reconcile then completes), short of the 25 s grace.
GIT_STOP_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Last:
    """The last reconcile this daemon ran, for status and readiness."""

    outcome: str = ""
    revision: str = ""
    error: str | None = None
    at: dt.datetime | None = None
    seconds: float = 0.0


class Daemon:
    def __init__(
        self,
        settings: settings_.Settings,
        db: database.Engine,
        reconciler: running.Reconciler,
        decider: deciding.Decider,
        *,
        leadership: locking.Leadership | None = None,
        clock: clock_.Clock | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.reconciler = reconciler
        self.decider = decider
        self.ref = settings.ref
        self.leadership = leadership or locking.for_database(db)
        self.clock = clock or clock_.SystemClock()
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self.last = _Last()
        self.applied_sha: str | None = None  # what this replica last saw applied (and serves)
        self._first = threading.Event()  # set after the first poll, whatever its outcome
        self._again = threading.Event()  # a webhook arrived while a poll was running
        self._reconciling = threading.Lock()  # poll and canary share one Reconciler
        self._refused: str | None = None  # a commit that failed validation or planning: not retried
        self._stopping = threading.Event()
        self._listener = threading.Thread(
            target=self.leadership.listen, args=(self.refresh, self._stopping), name="arm-refresh-listener", daemon=True
        )
        self.durations = metrics.Histogram("arm_reconcile_duration_seconds", "Time of reconciles that were not skipped.")
        self.outcomes = metrics.Counter("arm_reconcile_runs_total", "Reconciles by outcome.", "outcome")
        self.last_success = 0.0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Take the lead if it is free (on SQLite: or refuse to start), then start the jobs; the
        first poll runs at once."""
        self.leadership.acquire()
        s = self.settings
        now = dt.datetime.now(dt.UTC)
        jobs: list[tuple[str, Callable[[], Any], float, float]] = [
            ("poll", self.poll, s.poll_interval_seconds, s.poll_jitter_seconds),
            ("canary", self.canary, s.canary_step_seconds, 0.0),
            ("approvals", self.sweep_approvals, s.approval_sweep_seconds, 0.0),
            ("heartbeats", self.check_heartbeats, _heartbeat_interval(s.heartbeat_timeout_seconds), 0.0),
            ("retention", self.retain, s.retention_interval_seconds, 0.0),
            ("checkpoints", self.checkpoint, s.checkpoint_interval_seconds, 0.0),
            ("notifications", self.notify, s.notify_interval_seconds, 0.0),
        ]
        for name, job, seconds, jitter in jobs:
            trigger = IntervalTrigger(seconds=seconds, jitter=jitter or None, timezone=dt.UTC)
            first = now if name == "poll" else now + dt.timedelta(seconds=min(seconds, 5.0) * random.uniform(0.5, 1.0))
            self.scheduler.add_job(job, trigger, id=name, name=name, next_run_time=first)
        self.scheduler.start()
        self._listener.start()
        log.info("daemon started: following %s of %s every %g s", self.ref, self.reconciler.repo.display, s.poll_interval_seconds)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> bool:
        """Finish a running job (a reconcile), stop the others, flush records, let go of the lead.

        False when a reconcile was still running after ``grace_seconds`` (a fetch from a host
        that does not answer): the caller exits anyway; its open transaction rolls back.
        """
        self._stopping.set()
        finished = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            # A reconcile finishes what it does, but a clone or fetch still waiting on the Git
            # host after a few seconds is killed: the reconcile then fails at once, applying nothing.
            finished_soon = self._reconciling.acquire(timeout=min(GIT_STOP_SECONDS, grace_seconds))
            if not finished_soon:
                self.reconciler.repo.cancel()
            if finished_soon or self._reconciling.acquire(timeout=max(0.0, grace_seconds - GIT_STOP_SECONDS)):
                self._reconciling.release()
            else:
                finished = False
                log.error("a reconcile still runs %g s after the stop was asked; leaving it", grace_seconds)
        if self._listener.is_alive():
            self._listener.join(timeout=5)
        try:
            self.decider.close()
        finally:
            self.leadership.release()
        log.info("daemon stopped")
        return finished

    def refresh(self) -> None:
        """Poll now (a webhook): at once if no poll is running, else right after the running one."""
        self._again.set()
        if self.scheduler.running:
            job = self.scheduler.get_job("poll")
            if job is not None:
                job.modify(next_run_time=dt.datetime.now(dt.UTC))

    # ---------------------------------------------------------------- jobs

    def poll(self) -> None:
        """Fetch and apply the followed ref (leader), or follow the applied commit (others)."""
        try:
            while True:
                self._again.clear()
                if self.leadership.acquire():
                    self._reconcile(advance=False, fetch=True)
                self._follow()
                if not self._again.is_set() or self._stopping.is_set():
                    return
        finally:
            self._first.set()

    def canary(self) -> None:
        if not self.leadership.acquire():
            return
        if self._refused is not None and self.applied_sha:
            # The head is an invalid commit: the last good one stays in force, and so do its
            # canaries, which must still step, halt or roll back.
            self._reconcile(advance=True, fetch=False, ref=self.applied_sha)
            return
        self._reconcile(advance=True, fetch=False)

    def sweep_approvals(self) -> None:
        if self.leadership.acquire():
            with database.transaction(self.db) as connection:
                swept = approving.sweep(connection, self.clock.now())
            if swept.expired or swept.escalated:
                log.info("approvals: %d expired, %d escalated", len(swept.expired), len(swept.escalated))

    def check_heartbeats(self) -> None:
        if self.leadership.acquire():
            default = self.settings.heartbeat_timeout_seconds
            with database.transaction(self.db) as connection:
                stale = events.mark_stale(connection, self.clock.now(), default)
                rules = events.heartbeat_rules(connection, default)
            if stale:
                log.warning("%d instances without heartbeat marked UNHEALTHY: %s", len(stale), ", ".join(stale[:10]))
            # Checked every third of the shortest timeout an environment states: an environment
            # at 2 s is seen within ~3 s, not at the pace of the default.
            self._every("heartbeats", _heartbeat_interval(min([default, *(t for t, _ in rules.values())])))

    def _every(self, job_id: str, seconds: float) -> None:
        job = self.scheduler.get_job(job_id) if self.scheduler.running else None
        if job is not None and isinstance(job.trigger, IntervalTrigger) and job.trigger.interval.total_seconds() != seconds:
            job.reschedule(IntervalTrigger(seconds=seconds, timezone=dt.UTC))

    def retain(self) -> None:
        if self.leadership.acquire():
            s = self.settings
            policy = retention.Policy(
                s.op_event_retention_days, s.archive_retention_days, s.archive_dir, s.checkpoint_interval_seconds
            )
            with database.transaction(self.db) as connection:
                swept = retention.run(connection, policy, self.clock.now(), self.reconciler.signer)
            if swept.archived or swept.pruned:
                log.info(
                    "archived and deleted %d op events older than %d days; deleted %d archives past their retention",
                    swept.archived, s.op_event_retention_days, len(swept.pruned),
                )  # fmt: skip

    def notify(self) -> None:
        """Send the notifications that are due; one that fails waits out its backoff."""
        if not self.leadership.acquire():
            return
        passed = delivering.deliver_due(self.db, self.clock, os.environ, delivering.Policy.of(self.settings))
        if passed.delivered or passed.failed:
            log.info("notifications: %d delivered, %d given up", len(passed.delivered), len(passed.failed))

    def checkpoint(self) -> None:
        """Re-hash the stored genomes (a version found altered is denied every decision until it
        verifies again), then sign a checkpoint of every chain that moved since its last one."""
        if not self.leadership.acquire():
            return
        now = self.clock.now()
        with database.transaction(self.db) as connection:
            genomes = integrity.verify_genomes(connection, now)
            written = checkpoints.write(connection, self.reconciler.signer, now) if self.reconciler.signer else []
        for found in genomes:
            if found.newly_found or found.restored:
                log.error("genome of %s/%s: %s", found.tenant, found.name, found.describe())
        if written:
            log.info("signed %d chain checkpoints", len(written))

    # ---------------------------------------------------------------- steps

    def _reconcile(self, *, advance: bool, fetch: bool, ref: str | None = None) -> None:
        started = time.perf_counter()
        with self._reconciling:
            if self._stopping.is_set():
                return
            sha = None
            fetch_error: errors.SourceError | None = None
            try:
                if fetch:
                    fetch_error = self._fetch()
                if ref is not None:  # the canary of the commit in force, the head being invalid
                    self._finish_canary(self.reconciler.apply(ref, advance=advance), started)
                    return
                if self._refused is not None:
                    sha = self.reconciler.repo.resolve(self.ref).sha
                    if sha == self._refused:
                        return  # the same invalid commit: refused already, status says why; wait for a new one
                outcome = self.reconciler.apply(self.ref, advance=advance)
            except errors.ArmError as exc:
                sha = sha or self._resolved()
                if isinstance(exc, errors.ValidationFailed):  # PlanError too: the same commit fails the same way
                    self._refused = sha
                revision = f"{self.ref}@sha1:{sha}" if sha else self.last.revision
                self._finished("FAILED", revision, started, error=f"{type(exc).__name__}: {exc}")
                problems = [str(p) for p in getattr(exc, "problems", None) or []]
                # One line naming every problem (a JSON log carries them as a list too).
                why = (
                    f"{len(problems)} problem{'' if len(problems) == 1 else 's'}: " + "; ".join(problems)
                    if problems
                    else str(exc)
                )
                log.error(
                    "reconcile of %s failed; the last good commit stays in force: %s",
                    revision,
                    why,
                    extra={"revision": revision, "problems": problems} if problems else {"revision": revision},
                )
                return
        self._refused = None
        if outcome.outcome != "WAITING":  # a policy change waiting for approval is not applied
            self.applied_sha = outcome.sha
        if fetch_error is not None:
            # What the mirror holds is applied and served, but the remote is unreachable: status
            # and metrics say so until a fetch succeeds again.
            self._finished("FAILED", outcome.revision, started, error=f"SourceError: {fetch_error}")
            return
        self._finished(outcome.outcome, outcome.revision, started)
        if outcome.outcome != "UNCHANGED":
            log.info(
                "reconciled %s: %s, %d records in %.3f s",
                outcome.revision,
                outcome.outcome,
                outcome.records,
                outcome.seconds,
                extra={"revision": outcome.revision, "outcome": outcome.outcome},
            )

    def _fetch(self) -> errors.SourceError | None:
        """Fetch the remote; when it cannot be reached but a mirror is on disk, the error (the
        reconcile goes on with what the mirror holds, which may be newer than what is applied)."""
        repo = self.reconciler.repo
        try:
            repo.fetch()
        except errors.SourceError as exc:
            if self._stopping.is_set() or not repo.mirrored:
                raise
            log.error("cannot fetch %s, reconciling what its mirror holds: %s", repo.display, exc)
            return exc
        return None

    def _finish_canary(self, outcome: running.Outcome, started: float) -> None:
        self.outcomes.inc(outcome.outcome)
        if outcome.outcome != "UNCHANGED":
            self.durations.observe(time.perf_counter() - started)
            log.info("canary step on %s (the head is refused): %s", outcome.revision, outcome.outcome)

    def _resolved(self) -> str | None:
        try:
            return self.reconciler.repo.resolve(self.ref).sha
        except errors.ArmError:
            return None

    def _finished(self, outcome: str, revision: str, started: float, *, error: str | None = None) -> None:
        seconds = time.perf_counter() - started
        self.outcomes.inc(outcome)
        if outcome != "UNCHANGED":
            self.durations.observe(seconds)
        if error is None:
            self.last_success = time.time()
        if outcome != "UNCHANGED" or self.last.outcome in ("", "FAILED"):
            self.last = _Last(outcome, revision, error, self.clock.now(), seconds)

    def _follow(self) -> None:
        """Serve what is applied: note its SHA and load its policy (an OPA gets it pushed)."""
        try:
            with database.reading(self.db) as connection:
                state = self.decider.ensure_policy(connection)
        except errors.ArmError as exc:
            log.warning("cannot read the applied commit: %s", exc)
            return
        self.applied_sha = state.get("applied_sha")

    # ---------------------------------------------------------------- for the server

    def readiness(self) -> tuple[bool, str]:
        if not self._first.is_set():
            # A restart serves what the store has applied at once: the first poll may wait on a
            # Git host that is down or does not answer, which must not take decisions down.
            self._follow()
            if self.applied_sha:
                return True, f"serving {self.applied_sha} (the first reconcile is still running)"
            return False, "the first reconcile has not finished yet"
        if not self.applied_sha and not self.leadership.leading:
            self._follow()  # a follower: the leader may have applied since this replica's last poll
        if not self.applied_sha:
            why = f": {self.last.error}" if self.last.error else ""
            return False, f"no commit has been applied yet{why}"
        return True, f"serving {self.applied_sha}"

    def status(self) -> dict[str, Any]:
        if not self.leadership.leading:
            self._follow()
        last = self.last
        return {
            "leader": self.leadership.leading,
            "following": {"repo": self.reconciler.repo.display, "ref": self.ref, "path": self.reconciler.path},
            "pollIntervalSeconds": self.settings.poll_interval_seconds,
            "servedSha": self.applied_sha,
            "lastReconcile": {
                "outcome": last.outcome or None,
                "revision": last.revision or None,
                "error": last.error,
                "at": last.at.isoformat() if last.at else None,
                "seconds": round(last.seconds, 4),
            },
        }

    def metrics(self) -> list[str]:
        failing = 1 if self.last.outcome == "FAILED" else 0
        return [
            *self.durations.render(),
            *self.outcomes.render(),
            "# HELP arm_reconcile_last_success_timestamp_seconds When a reconcile last succeeded (Unix time).",
            "# TYPE arm_reconcile_last_success_timestamp_seconds gauge",
            f"arm_reconcile_last_success_timestamp_seconds {self.last_success:.3f}",
            "# HELP arm_reconcile_failing 1 when the last reconcile failed and the last good commit is served.",
            "# TYPE arm_reconcile_failing gauge",
            f"arm_reconcile_failing {failing}",
            "# HELP arm_leader 1 on the replica that applies commits.",
            "# TYPE arm_leader gauge",
            f"arm_leader {1 if self.leadership.leading else 0}",
        ]

    def webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        secret = self.settings.webhook_secret
        if not secret:
            raise errors.NotFound("webhooks are off: set ARM_WEBHOOK_SECRET to the secret configured in the Git host")
        push = hooks.verify(headers, body, secret)
        if not hooks.follows(push, self.ref):
            why = "not a push" if not push.is_push else f"push to {push.ref}; following {self.ref}"
            return {"refresh": False, "reason": why}
        self.refresh()
        if not self.leadership.leading:
            self.leadership.notify()  # the leader applies; it may not be the replica the host called
        return {"refresh": True, "ref": push.ref, "after": push.after}


def _heartbeat_interval(timeout_seconds: float) -> float:
    return max(1.0, timeout_seconds / 3)
