"""One reconcile, start to finish: validate the commit, plan it, apply it, record the run.

``Reconciler`` ties the layers together for the CLI and the daemon: it resolves the ref, stops
at once when the database already has that commit and nothing changed outside Git since (same
SHA, same state generation: no query beyond one row, no writes), validates the commit, loads its
policy into the engine, plans against the actual state and applies the plan in one transaction
together with the reconcile-run row, the new applied revision and (with a signer) a signed
checkpoint of every tenant's chain it moved (``evidence.checkpoints``; the daemon's timer
anchors what decisions and operators append between applies). A failure of any step applies
nothing, keeps the last good commit in force, and is recorded as a failed run with every error.

Canary rollouts move between commits: ``apply(ref, advance=True)`` (``armctl apply``, the
daemon's canary job) lets each canary in progress take its next step, so it is not stopped by
the same-SHA shortcut while one is in progress; it reads the canaries' instance health fresh,
and when nothing is due it writes nothing, not even a run. ``advance=False`` (the daemon's Git
poll) applies the commit and leaves canaries at their step.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from typing import Any

import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler import errors
from reconciler.desired import caching, loading, repository, snapshot
from reconciler.evidence import checkpoints, keys
from reconciler.notifications import events, outbox
from reconciler.policy import engines, library
from reconciler.reconcile import actions, applying, governing, planning, reporting, validating
from reconciler.state import actual as actual_
from reconciler.state import database, fleetstate, tables

__all__ = ["Outcome", "Reconciler"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    outcome: str  # APPLIED | NOOP | UNCHANGED (nothing written; may carry the plan) | FAILED | PLANNED | WAITING (a widening policy change)
    revision: str
    sha: str
    plan: actions.Plan | None = None
    records: int = 0
    run_id: int | None = None
    seconds: float = 0.0
    problems: list[errors.Problem] = dataclasses.field(default_factory=list)
    #: seconds spent per phase: validate, plan, apply, commit
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    #: the commit's fleet Rego (path → text), set by ``plan`` so callers can run its tests
    rego: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the validated commit, set by ``plan`` (for its decision impact)
    desired: snapshot.Snapshot | None = None


class Reconciler:
    def __init__(
        self,
        db: sa.Engine,
        repo: repository.Repository,
        path: str,
        *,
        engine: engines.Engine | None = None,
        cache: caching.ParseCache | None = None,
        clock: clock_.Clock | None = None,
        limits: loading.Limits | None = None,
        workers: int = 1,
        signer: keys.Signer | None = None,
    ) -> None:
        self.db = db
        self.repo = repo
        self.path = path
        self.engine = engine or engines.EmbeddedEngine()
        self.cache = cache or caching.ParseCache()
        self.clock = clock or clock_.SystemClock()
        self.limits = limits
        self.workers = workers
        #: signs a checkpoint of every chain the apply moved, in its transaction (None: no checkpoints)
        self.signer = signer
        self.policy_digest = ""
        self._previous: snapshot.Snapshot | None = None  # the last applied snapshot, for incremental loads
        self.cached_actual: actual_.Actual | None = None  # the state as the last apply left it
        #: (SHA, state generation) → the outcome of a commit that waits for approval of its policy
        #: change: asked again before anything changed (an approval bumps the generation), it waits
        self._waiting: tuple[tuple[str, int], Outcome] | None = None

    # ---------------------------------------------------------------- entry points

    def plan(self, ref: str, *, advance: bool = True) -> Outcome:
        """What applying ``ref`` would do (with ``advance``, canary steps included); changes nothing."""
        started = time.perf_counter()
        snap = self._validated(ref)
        with database.reading(self.db) as connection:
            actual = actual_.load(connection)
            health = actual_.canary_health(connection) if actual.has_canaries() else {}
            result = planning.plan(snap, actual, self.engine, self.policy_digest, advance=advance, health=health)
            result.raise_for_problems()
            reporting.describe_updates(connection, result)
        return Outcome(
            "PLANNED", snap.revision, snap.commit.sha, plan=result, seconds=time.perf_counter() - started, rego=dict(snap.rego),
            desired=snap,
        )  # fmt: skip

    def validated(self, ref: str) -> snapshot.Snapshot:
        """``ref`` read and validated (every problem raised), its policy loaded; nothing planned."""
        return self._validated(ref)

    def apply(self, ref: str, *, advance: bool = True) -> Outcome:
        """Make the database match ``ref``; all of it or none of it.

        With ``advance`` every canary rollout in progress takes its next step if its instances
        are healthy (or halts, or rolls back); without, canaries stay at their step.

        Whatever stops it (an invalid commit, an unreadable source, the store, a bug) is recorded
        as a FAILED run with its problems before the error leaves, as a Flux controller writes its
        status in a deferred block: status always says why the last attempt failed. A bug leaves
        as :class:`errors.InternalError`, its traceback logged.
        """
        started = time.perf_counter()
        attempt = _Attempt(self.repo.display, ref, self.path)
        try:
            return self._apply(ref, advance, started, attempt)
        except errors.ArmError as exc:
            self.cached_actual = None
            self._record_failure(attempt, getattr(exc, "problems", None) or [errors.Problem("<reconcile>", message=str(exc))])
            raise
        except Exception as exc:  # a bug: recorded as a failed run like any failure, then reported as one
            self.cached_actual = None
            log.error("reconciling %s failed unexpectedly", attempt.revision, exc_info=exc, extra={"revision": attempt.revision})
            message = (
                f"the reconcile of {attempt.revision} failed unexpectedly ({type(exc).__name__}: {exc}); nothing was applied"
            )
            self._record_failure(attempt, [errors.Problem("<reconcile>", message=message)])
            raise errors.InternalError(message) from exc

    def _apply(self, ref: str, advance: bool, started: float, attempt: _Attempt) -> Outcome:
        commit = self.repo.resolve(ref)
        attempt.commit = commit
        revision = f"{ref}@sha1:{commit.sha}"
        with database.reading(self.db) as connection:
            state = fleetstate.read(connection)
            if (
                state is not None
                and state["applied_sha"] == commit.sha
                and state["generation"] == state["observed_generation"]
                and not (advance and actual_.canaries_in_progress(connection))
            ):
                return Outcome("UNCHANGED", revision, commit.sha, seconds=time.perf_counter() - started)
            waiting = self._waiting
            if waiting is not None and state is not None and waiting[0] == (commit.sha, state["generation"]):
                return dataclasses.replace(waiting[1], seconds=time.perf_counter() - started)
        snap = self._validated(ref)
        timings = {"validate": time.perf_counter() - started}
        # A tenant that governs policy changes: the decision impact is probed now, in a read, not
        # under the apply's write lock, which decisions being recorded wait for.
        with database.reading(self.db) as connection:
            widened = governing.widening(connection, snap)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a plan allocates tens of thousands of objects; the GC would rescan the snapshot each time
        applied: applying.ApplyResult | None = None
        try:
            with database.transaction(self.db) as connection:
                mark = time.perf_counter()
                actual = self._actual(connection)
                health = actual_.canary_health(connection) if actual.has_canaries() else {}
                result = planning.plan(snap, actual, self.engine, self.policy_digest, advance=advance, health=health)
                result.raise_for_problems()
                timings["plan"] = time.perf_counter() - mark
                mark = time.perf_counter()
                waits, requested = governing.check(
                    connection, snap, actual, result, self.policy_digest, self.clock.now(), widened
                )
                if waits:
                    # A widening policy change waits for its approval: nothing of the commit is applied.
                    result.conditions.extend(waits)
                    if requested:
                        now = self.clock.now()
                        waiting_run = self._insert_run(connection, attempt, "WAITING", now)
                        problems = [errors.Problem("<policy change>", message=c.message).as_dict() for c in waits]
                        connection.execute(
                            tables.reconcile_runs.update()
                            .where(tables.reconcile_runs.c.id == waiting_run)
                            .values(finished_at=now, errors=problems)
                        )
                    self.cached_actual = None
                    held = Outcome("WAITING", snap.revision, snap.commit.sha, result, seconds=time.perf_counter() - started)
                    self._waiting = ((snap.commit.sha, actual.generation), held)
                    return held
                if _idle(actual, snap, result):
                    outcome, run_id = "UNCHANGED", None  # a canary that waits: nothing to write, not even a run
                else:
                    now = self.clock.now()
                    run_id = self._insert_run(connection, attempt, "RUNNING", now)
                    applied = applying.apply(connection, result, snap, actual, now, run_id)
                    outcome = "APPLIED" if result.actions else "NOOP"
                    self._finish(connection, run_id, outcome, len(result.actions), [], snap, actual.generation)
                    if self.signer is not None:
                        # The tenants whose chains this apply holds locked already: locking more
                        # here, after the plan's, could deadlock with a decision writer.
                        checkpoints.write(connection, self.signer, now, {a.tenant for a in result.actions})
                    if applied.after is not None:
                        applied.after.policy_digest = self.policy_digest
                timings["apply"] = time.perf_counter() - mark
                mark = time.perf_counter()
            timings["commit"] = time.perf_counter() - mark
        except errors.StoreError as exc:
            raise errors.StoreError(f"applying {snap.revision} failed, nothing was applied: {exc}") from exc
        finally:
            if gc_was_enabled:
                gc.enable()
        records = applied.records if applied is not None else 0
        if applied is not None:
            log.info(
                "applied %s: %d actions, %d records",
                snap.revision,
                len(result.actions),
                records,
                extra={"revision": snap.revision},
            )
            self.cached_actual = applied.after
        else:
            self.cached_actual = actual  # what the database holds: nothing was written
        snap.release_data()
        self._previous = snap
        return Outcome(
            outcome,
            snap.revision,
            snap.commit.sha,
            result,
            records,
            run_id,
            time.perf_counter() - started,
            timings=timings,
        )

    # ---------------------------------------------------------------- steps

    def _actual(self, connection: sa.Connection) -> actual_.Actual:
        """The actual state: as the last apply left it when nothing wrote since, else read.

        Everything that writes outside a reconcile (approvals, controls, integrity findings)
        bumps the state generation, and another replica's apply changes the applied SHA, so
        either tells the cached state is stale.
        """
        cached = self.cached_actual
        state = fleetstate.read(connection) if cached is not None else None
        if (
            cached is not None
            and state is not None
            and state["applied_sha"] == cached.applied_sha
            and state["generation"] == state["observed_generation"] == cached.generation
            and state["policy_digest"] == cached.policy_digest
        ):
            return cached
        return actual_.load(connection)

    def _validated(self, ref: str) -> snapshot.Snapshot:
        snap = validating.validate(
            self.repo, ref, self.path, cache=self.cache, limits=self.limits, workers=self.workers, previous=self._previous
        )
        if snap.problems:
            snap.raise_for_problems()
        modules = library.modules_for(snap.rego, tests=False)
        bundle = engines.Bundle(modules, {}, snap.commit.sha)
        if self.engine.revision != bundle.revision:
            self.engine.load(bundle)
        self.policy_digest = library.digest(modules)
        return snap

    def _insert_run(self, connection: sa.Connection, attempt: _Attempt, outcome: str, now: Any) -> int:
        c = attempt.commit
        return int(
            connection.execute(
                tables.reconcile_runs.insert().returning(tables.reconcile_runs.c.id),
                {
                    "source": attempt.source,
                    "ref": attempt.ref,
                    "path": attempt.path,
                    "sha": c.sha if c is not None else None,
                    "author": f"{c.author_name} <{c.author_email}>" if c is not None else "",
                    "started_at": now,
                    "outcome": outcome,
                    "actions": 0,
                    "errors": [],
                },
            ).scalar_one()
        )

    def _finish(
        self,
        connection: sa.Connection,
        run_id: int,
        outcome: str,
        count: int,
        problems: list[dict[str, Any]],
        snap: snapshot.Snapshot,
        generation: int,
    ) -> None:
        now = self.clock.now()
        connection.execute(
            tables.reconcile_runs.update()
            .where(tables.reconcile_runs.c.id == run_id)
            .values(finished_at=now, outcome=outcome, actions=count, errors=problems)
        )
        values = {
            "source": snap.source,
            "ref": snap.ref,
            "path": snap.path,
            "applied_sha": snap.commit.sha,
            "applied_at": now,
            "observed_generation": generation,
            "policy_digest": self.policy_digest,
        }
        state = fleetstate.read(connection)
        if state is None or state.get("policy_digest") != self.policy_digest:
            connection.execute(tables.policy_modules.delete())
            if snap.rego:
                connection.execute(
                    tables.policy_modules.insert(), [{"path": p, "text": t, "sha": snap.commit.sha} for p, t in snap.rego.items()]
                )
        updated = connection.execute(tables.fleet_state.update().where(tables.fleet_state.c.id == 1).values(**values)).rowcount
        if not updated:
            connection.execute(tables.fleet_state.insert().values(id=1, generation=generation, **values))

    def _record_failure(self, attempt: _Attempt, problems: list[errors.Problem]) -> None:
        """A failed run is recorded in its own transaction; the applied revision stays."""
        try:
            with database.transaction(self.db) as connection:
                runs = tables.reconcile_runs.c
                last = connection.execute(sa.select(runs.outcome, runs.sha).order_by(runs.id.desc()).limit(1)).first()
                run_id = self._insert_run(connection, attempt, "FAILED", self.clock.now())
                connection.execute(
                    tables.reconcile_runs.update()
                    .where(tables.reconcile_runs.c.id == run_id)
                    .values(finished_at=self.clock.now(), errors=[p.as_dict() for p in problems])
                )
                sha = attempt.commit.sha if attempt.commit is not None else None
                if last is None or last.outcome != "FAILED" or last.sha != sha:  # told once per commit that fails
                    told = _failure_event(attempt, problems, run_id)
                    outbox.enqueue(database.driver_cursor(connection), connection.dialect.name, [told], self.clock.now())
        except errors.StoreError as exc:
            log.error("cannot record the failed reconcile of %s: %s", attempt.revision, exc, extra={"revision": attempt.revision})


@dataclasses.dataclass
class _Attempt:
    """What a reconcile run records about its source, filled in as the reconcile learns it."""

    source: str
    ref: str
    path: str
    commit: repository.Commit | None = None

    @property
    def revision(self) -> str:
        return f"{self.ref}@sha1:{self.commit.sha}" if self.commit is not None else self.ref


def _failure_event(attempt: _Attempt, problems: list[errors.Problem], run_id: int) -> events.Event:
    """``RECONCILE_FAILED``, for the channels of every tenant: the fleet's commit is shared."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return events.Event(
        event="RECONCILE_FAILED",
        tenant=None,
        object_kind="Commit",
        object_name=attempt.commit.sha if attempt.commit is not None else attempt.ref,
        summary=f"the reconcile of {attempt.revision} failed, the last good commit stays in force: {first.where()}: "
        f"{first.message}{more}",
        details={
            "revision": attempt.revision,
            "run": run_id,
            "problems": [p.as_dict() for p in problems[:20]],
            "count": len(problems),
        },
    )


def _idle(actual: actual_.Actual, snap: snapshot.Snapshot, result: actions.Plan) -> bool:
    """The applied commit, nothing changed outside Git since, and nothing to do: nothing to record."""
    return actual.applied_sha == snap.commit.sha and actual.generation == actual.observed_generation and not result.has_changes


def open_database(url: str) -> sa.Engine:
    engine = database.connect(url)
    database.require_current(engine)
    return engine
