"""Deciding tool calls: resolve the caller, ask the policy, record the answer before giving it.

``Decider.decide`` resolves instance → version → template → environment → tenant from the
applied commit, takes the version's effective envelope (stored at apply), assesses the call's
risk, counts what the instance spent and how often it made this very call, and evaluates the
policy (``policy.inputs.evaluate``: ``data.arm.decision.unchecked`` for the well-formed inputs it
builds, ``result`` for an unknown instance; a tenant's kill switch shows as the instance's held
state; a version whose stored genome failed verification is DENY with ``VERSION_INTEGRITY_FAILED``,
read into the cached resolution like the envelope). In the same transaction it records the decision as an op event
(secrets redacted from arguments and reasons), a DENY also as a change record
(``BUDGET_EXCEEDED``, ``LOOP_DETECTED`` or ``POLICY_EVALUATED``), and a NEEDS_APPROVAL as an approval request the runtime can poll; an
approved request allows exactly that call, once. Nothing is answered that was not committed.
The policy is the applied commit's: the library plus the fleet modules stored at apply.

Two ways in, one implementation. ``decide`` (``armctl decide``, the slow path)
reads the state row and catches the ledger up with the table on every call: exact.
``decide_soon`` (the server's event loop) reads nothing: it resolves from the cached
resolution and the state row the writer last read, counts spend and repeats from the ledger
(``decisions.ledger``), evaluates, and hands the decision to the writer (``decisions.recording``),
whose group commit calls back with it once stored. What it cannot answer from memory — an
unknown instance or run, a changed state row, an approval to request or use — goes through
``decide``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler import errors, metrics
from reconciler.decisions import bundling, recording
from reconciler.decisions import ledger as ledger_
from reconciler.oversight import approving, holds
from reconciler.policy import engines, envelopes, inputs, risk
from reconciler.state import database, fleetstate, opevents, tables

__all__ = ["Decider", "Decision", "Request"]

log = logging.getLogger(__name__)

#: After a failed policy load, decisions use the last good revision this long before retrying.
_POLICY_RETRY_SECONDS = 5.0

#: The server re-reads the state row and tails op events at least this often (and after every
#: batch of decisions): the bound on how late it sees a change another process made.
REFRESH_SECONDS = 0.05

#: The loop window of an envelope that states none, and the least the ledger keeps.
_DEFAULT_WINDOW = 60.0
_NO_REVISION = "none"  # the engine's revision while no commit is applied (the library alone)

#: How often the ledger forgets decisions past the longest loop window.
_PRUNE_SECONDS = 1.0  # each prune pops what expired since the last: ~1 s of decisions


class Unseen(errors.Forbidden):
    """Raised by an ``authorize`` callback for an instance its caller may not know exists (another
    tenant's): the decider answers it as an unknown instance, so the answer tells nothing."""


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Request:
    instance: str
    tool: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost_estimate: float = 0.0
    run_id: str | None = None


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Decision:
    decision: str
    reasons: list[str]
    decision_id: int
    policy_revision: str | None
    approval_id: int | None = None
    envelope: Mapping[str, Any] | None = None
    risk: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls, outcome: inputs.Outcome, decision_id: int, revision: str | None, approval_id: int | None, envelope: Any
    ) -> Decision:
        """The answer to a stored decision."""
        return cls(outcome.decision, outcome.reasons, decision_id, revision, approval_id, envelope, outcome.risk.as_dict())

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "decision": self.decision,
            "reasons": self.reasons,
            "decisionId": self.decision_id,
            "policyRevision": self.policy_revision,
            "envelope": self.envelope,
            "risk": self.risk,
        }
        if self.approval_id is not None:
            body["approvalId"] = self.approval_id
        return body


@dataclasses.dataclass
class _Fleet:
    """What resolving a caller needs, read once per applied revision and state generation."""

    key: tuple[Any, ...]
    instances: dict[str, Any]
    envelopes: dict[tuple[str, str], Any]
    production: dict[tuple[str, str], bool]
    tools: dict[str, dict[str, Any]]
    # Approved, unused tool calls (tenant, instance, call key). Deciding an approval bumps the
    # generation, so a new one is seen; a used one is re-checked under lock before it allows.
    granted: frozenset[tuple[str, str, str]]
    horizon: float = 60.0  # the longest loop window of any envelope: what the ledger keeps
    # Tenants whose kill switch is pulled → the state it holds their instances in, those created
    # after it was pulled included (holds.control_tenant).
    holds: dict[str, str] = dataclasses.field(default_factory=dict)
    # Per instance, built on first use: the parts of the policy's input that only an apply or a
    # state change can alter (the instance and environment documents, the envelope, its window).
    callers: dict[str, _Caller] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Caller:
    tenant: str
    version: str
    instance: dict[str, Any]
    environment: dict[str, Any]
    envelope: Any
    window: dt.timedelta
    policy_envelope: dict[str, Any]  # the envelope as the policy reads it: budgets in micro-units


class _InFlight:
    """Decisions of this process not stored yet, per call: loop detection must count them.

    ``enter`` counts a decision of a call (instance, call key) in and says how many of the same
    call were in flight before it; ``leave`` counts it out once it is stored (the writer feeds
    the ledger first, so no repeat is ever in neither).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def enter(self, ident: tuple[str, str]) -> int:
        with self._lock:
            earlier = self._counts.get(ident, 0)
            self._counts[ident] = earlier + 1
        return earlier

    def leave(self, ident: tuple[str, str]) -> None:
        with self._lock:
            left = self._counts.get(ident, 1) - 1
            if left:
                self._counts[ident] = left
            else:
                self._counts.pop(ident, None)


class Decider:
    """Decides tool calls; see the module docstring. ``group_commit`` (the server) stores
    decisions through a writer thread and keeps the fleet's state row cached for
    :meth:`decide_soon`; without it (``armctl decide``) each decision commits on its own."""

    def __init__(
        self,
        db: sa.Engine,
        *,
        engine: engines.Engine | None = None,
        clock: clock_.Clock | None = None,
        group_commit: bool = False,
    ) -> None:
        self.db = db
        self.engine = engine or engines.EmbeddedEngine()
        self.clock = clock or clock_.SystemClock()
        self._fleet: _Fleet | None = None
        self._fleet_lock = threading.Lock()
        self._policy_lock = threading.Lock()
        self._seed_lock = threading.Lock()
        #: how long storing decisions takes, per transaction (one decision or a group)
        self.write_seconds = metrics.Histogram(
            "arm_op_event_write_seconds", "Time to commit decision op events, per transaction (a group commit counts once)."
        )
        self.ledger = ledger_.Ledger(db.dialect.name)
        # The state row (applied SHA, applied at, generation) as last read: decide_soon answers
        # with it; the writer re-reads it after each batch and every REFRESH_SECONDS.
        self._state_key: tuple[Any, ...] | None = None
        self._writer = (
            recording.Writer(
                db, self.ledger, self.clock.now, self.write_seconds, self._refresh_with, idle_seconds=REFRESH_SECONDS
            )
            if group_commit
            else None
        )
        self._inflight = _InFlight()
        #: the last failed policy load ({revision, message, at}), None once a load succeeds
        self.policy_failure: dict[str, Any] | None = None
        self._retry_at = 0.0

    def close(self) -> None:
        """Store the decisions still queued and stop the writer."""
        if self._writer is not None:
            self._writer.close()

    def ensure_policy(self, connection: sa.Connection) -> dict[str, Any]:
        """Load the applied commit's policy into the engine if it is not loaded yet (and take
        the state row as read: an apply in this process is served at once); the state row."""
        state = fleetstate.read(connection) or {}
        self._state_key = fleetstate.key_of(state)
        self._policy(connection, state.get("applied_sha"))
        return state

    def recording_problem(self) -> str | None:
        """Why the last decisions could not be stored (a read-only or full store, say), or None."""
        return self._writer.failing if self._writer is not None else None

    def policy_status(self) -> dict[str, Any]:
        """Which engine answers, the revision it has loaded and the last failed load, for status."""
        return {
            "engine": "opa" if hasattr(self.engine, "url") else "embedded",
            "url": getattr(self.engine, "url", None),
            "loadedRevision": self.engine.revision,
            "failure": self.policy_failure,
        }

    def invalidate(self) -> None:
        """This process changed state (a control, an approval, an event): re-read the state row
        and take new op events in now, so the very next decision sees the change."""
        with database.reading(self.db) as connection:
            self._refresh_with(connection)

    def _refresh_with(self, connection: sa.Connection) -> None:
        cursor = database.driver_cursor(connection)
        self._state_key = fleetstate.read_key(cursor)
        if self.ledger.last_id is not None:
            self.ledger.tail(cursor)
            now = self.clock.now()
            if now.timestamp() - self.ledger.pruned_at >= _PRUNE_SECONDS:
                self.ledger.prune(now)

    def _policy(self, connection: sa.Connection, revision: str | None) -> None:
        loaded = revision or _NO_REVISION  # with nothing applied: the library alone, loaded once
        if self.engine.revision == loaded:
            return
        with self._policy_lock:
            if self.engine.revision == loaded:
                return
            if self.engine.revision is not None and self.clock.monotonic() < self._retry_at:
                return  # the last load failed moments ago: stay on the last good revision
            # Every tenant's data, as each tenant's bundle carries its own, if fleet Rego reads it.
            bundle = bundling.policy(connection, None, revision=loaded, data_if_read=True)
            try:
                self.engine.load(bundle)
            except errors.PolicyError as exc:
                # The engine keeps the last good revision (an OPA push restores it); decisions go on
                # with it and say so in policyRevision. With no good revision at all, nothing is decided.
                self.policy_failure = {"revision": revision, "message": str(exc), "at": self.clock.now().isoformat()}
                self._retry_at = self.clock.monotonic() + _POLICY_RETRY_SECONDS
                log.warning("%s; decisions stay on revision %s", exc, self.engine.revision)
                if self.engine.revision is None:
                    raise
                return
            self.policy_failure = None

    # ---------------------------------------------------------------- deciding

    def decide(
        self, request: Request, authorize: Callable[[str | None], None] | None = None, caller_tenant: str | None = None
    ) -> Decision:
        """Decide and record ``request``, reading the state row, policy and op events now (exact).

        ``authorize`` is called with the instance's tenant (None when unknown) before anything
        is recorded, and may raise to refuse the caller. ``caller_tenant``: the tenant the caller
        acts for (its token's); an unknown instance's DENY is recorded there, change record
        included, as every DENY is."""
        request = _cleaned(request)
        now = self.clock.now()
        key = inputs.call_key(request.tool, request.args)
        ident = (request.instance, key)
        # Counted in flight before anything is read: a repeat that leaves the count after this
        # point was in the ledger before it left, so the reads below see it; none is missed.
        earlier = self._inflight.enter(ident)
        handed = False  # to the writer, which lets the call leave the count once it is stored
        try:
            with database.reading(self.db) as connection:
                state = self.ensure_policy(connection)
                revision = self.engine.revision if state.get("applied_sha") else None
                fleet = self._resolution(connection, state)
                self._load_ledger(connection, fleet, request, now)
                assessed = self._assess(fleet, request, key, earlier, now, _Fallback(connection))
                assert assessed is not None  # with a fallback the table answers what the ledger lacks
                context, tenant, version = assessed
                if authorize is not None:
                    try:
                        authorize(tenant)
                    except Unseen:
                        context, tenant, version = _UNKNOWN, None, None
                if tenant is None:
                    tenant = caller_tenant
            outcome = self._evaluate(request, context, version)
            taken = _taken(request)
            if outcome.decision == "NEEDS_APPROVAL" or (outcome.decision == "ALLOW" and context.approval_granted):
                return self._decide_locked(request, key, context, tenant, version, revision, now, outcome, taken)
            pending = self._pending(request, key, tenant, version, revision, now, outcome, None, context, taken=taken)
            if self._writer is not None:
                pending.release, handed = (lambda: self._inflight.leave(ident)), True
                decision_id = self._writer.wait(pending)
            else:
                decision_id = self._store_alone(pending, now)
        finally:
            if not handed:
                self._inflight.leave(ident)
        return Decision.of(outcome, decision_id, revision, None, context.envelope)

    def simulate(self, request: Request, tenant: str, *, version: str | None = None, environment: str | None = None) -> Decision:
        """What the applied policy would answer ``request`` now, recorded nowhere (the console's
        policy simulator). With ``version``: the call of a new ACTIVE instance of that version
        (in ``environment``, if given), spending nothing yet; otherwise of ``request.instance``,
        with its state, spending and repeats as stored. ``errors.NotFound`` for an instance or a
        version that ``tenant`` does not have: the simulator never shows another tenant's."""
        request = _cleaned(request)
        now = self.clock.now()
        key = inputs.call_key(request.tool, request.args)
        with database.reading(self.db) as connection:
            state = self.ensure_policy(connection)
            revision = self.engine.revision if state.get("applied_sha") else None
            fleet = self._resolution(connection, state)
            if version is None:
                instance = fleet.instances.get(request.instance)
                if instance is None or instance.tenant != tenant:
                    raise errors.NotFound(f"instance {request.instance!r} does not exist in tenant {tenant!r}")
                assessed = self._assess(fleet, request, key, 0, now, _Fallback(connection))
                assert assessed is not None  # with a fallback the table answers what the ledger lacks
                context, _, version = assessed
            else:
                context = _version_context(connection, fleet, tenant, version, environment, request.tool)
        outcome = self._evaluate(request, context, version)
        _, secrets, reasons = _redacted(request, outcome.reasons)
        assessed_risk = outcome.risk.as_dict()
        assessed_risk["reasons"] = [risk.redact_text(reason, secrets) for reason in assessed_risk["reasons"]]
        return Decision(outcome.decision, reasons, 0, revision, None, context.envelope, assessed_risk)

    def decide_soon(
        self,
        request: Request,
        authorize: Callable[[str | None], None] | None,
        loop: asyncio.AbstractEventLoop,
        then: Callable[[Decision | None, BaseException | None], None],
    ) -> bool:
        """The server's path, in its event loop: decide from memory and hand the decision to the
        writer, which calls ``then(decision, None)`` in ``loop`` once it is stored, or ``then(None,
        error)`` if it was not. False when this call needs :meth:`decide` instead (nothing cached
        yet, state changed, unknown instance or run, an approval); ``then`` is not called then.

        It answers from the state row as the writer last read it: a change made by another
        process (an apply, a control) is seen within REFRESH_SECONDS plus one batch; a change
        made through this process calls :meth:`invalidate` and is seen at once."""
        writer, state_key, fleet = self._writer, self._state_key, self._fleet
        if writer is None or state_key is None or fleet is None or fleet.key != state_key:
            return False
        if not isinstance(self.engine, engines.EmbeddedEngine):
            return False  # an OPA answers over HTTP: that blocks, so not in the event loop
        applied = state_key[0]
        if applied is not None and self.engine.revision != applied:
            return False  # a new revision to load (or a failed load to retry): the slow path does it
        request = _cleaned(request)
        if request.instance not in fleet.instances:
            return False  # unknown here: the slow path reads the state row first, then denies
        now = self.clock.now()
        key = inputs.call_key(request.tool, request.args)
        ident = (request.instance, key)
        earlier = self._inflight.enter(ident)
        handed = False  # to the writer, which lets the call leave the count once it is stored
        try:
            assessed = self._assess(fleet, request, key, earlier, now, None)
            if assessed is None:
                return False
            context, tenant, version = assessed
            if authorize is not None:
                try:
                    authorize(tenant)
                except Unseen:
                    return False  # the slow path answers it as an unknown instance
            if context.approval_granted:
                return False
            outcome = self._evaluate(request, context, version)
            if outcome.decision == "NEEDS_APPROVAL":
                return False
            revision = self.engine.revision if applied else None
            pending = self._pending(request, key, tenant, version, revision, now, outcome, None, context)

            def done(item: recording.Pending) -> None:
                if item.decision_id is None:
                    then(None, recording.not_recorded(item.error))
                else:
                    then(Decision.of(outcome, item.decision_id, revision, None, context.envelope), None)

            pending.release, pending.loop, pending.done = (lambda: self._inflight.leave(ident)), loop, done
            handed = True
            writer.submit_soon(pending)  # on failure it lets the call leave the count itself
            return True
        finally:
            if not handed:
                self._inflight.leave(ident)

    def _decide_locked(
        self,
        request: Request,
        key: str,
        context: inputs.Context,
        tenant: str | None,
        version: str | None,
        revision: str | None,
        now: dt.datetime,
        outcome: inputs.Outcome,
        taken: _Taken,
    ) -> Decision:
        # Approvals are granted and used one at a time: these decisions commit on their own,
        # re-checking the approval under a lock so one approval allows one call.
        started = time.perf_counter()
        with database.transaction(self.db) as connection:
            approval_id, outcome = self._approval_step(connection, request, tenant, key, outcome, context, version, now, taken)
            granted = context.approval_granted and outcome.decision == "ALLOW" and approval_id is not None
            pending = self._pending(
                request, key, tenant, version, revision, now, outcome, approval_id, context, granted, taken=taken
            )
            (decision_id,) = recording.store(connection, [pending], now)
        self.write_seconds.observe(time.perf_counter() - started)
        self.ledger.add_decisions([decision_id], [(pending.tenant, pending.instance, key, now.timestamp())])
        return Decision.of(outcome, decision_id, revision, approval_id, context.envelope)

    def _store_alone(self, pending: recording.Pending, now: dt.datetime) -> int:
        started = time.perf_counter()
        with database.transaction(self.db) as connection:
            (decision_id,) = recording.store(connection, [pending], now)
        self.write_seconds.observe(time.perf_counter() - started)
        self.ledger.add_decisions([decision_id], [(pending.tenant, pending.instance, pending.key, now.timestamp())])
        return decision_id

    def _evaluate(self, request: Request, context: inputs.Context, version: str | None) -> inputs.Outcome:
        document, assessment = inputs.build_input(context, request.tool, request.args, request.cost_estimate)
        if context.instance is not None and context.envelope is _MISSING:
            # Fail closed: a version without its envelope was never fully applied.
            return inputs.Outcome("DENY", [f"version {version} has no effective envelope yet: apply the fleet again"], assessment)
        if context.envelope is _INTEGRITY_FAILED:
            reason = (
                f"VERSION_INTEGRITY_FAILED: the stored genome of version {version} does not match its hash; "
                "every decision of its instances is denied until it verifies again ('armctl audit verify')"
            )
            return inputs.Outcome("DENY", [reason], assessment)
        return inputs.evaluate(self.engine, document, assessment)

    def _pending(
        self,
        request: Request,
        key: str,
        tenant: str | None,
        version: str | None,
        revision: str | None,
        now: dt.datetime,
        outcome: inputs.Outcome,
        approval_id: int | None,
        context: inputs.Context,
        granted: bool = False,
        *,
        taken: _Taken | None = None,
    ) -> recording.Pending:
        # The answer (Decision.of) keeps the reasons as the policy wrote them: it goes back to
        # the caller, whose arguments they quote.
        taken = taken if taken is not None else _taken(request)
        args, secrets, reasons = _redacted(request, outcome.reasons, taken)
        assessed = outcome.risk.as_dict()
        assessed["reasons"] = [risk.redact_text(reason, secrets) for reason in assessed["reasons"]]
        payload = {
            # A tool the catalog does not know may be anything, a pasted secret too.
            "tool": request.tool if context.tool is not None else risk.redact_text(request.tool),
            "args": args,
            "decision": outcome.decision,
            "reasons": reasons,
            "risk": assessed,
            "callKey": key,
            "runId": taken.run_id,
            "costEstimate": request.cost_estimate,
            "approvalId": approval_id,
            "policyRevision": revision,
            "version": version,
            "replay": _replay_data(context, outcome, granted, secrets),
        }
        deny = _deny_type(outcome.reasons) if outcome.decision == "DENY" and tenant is not None else None
        # An undeclared instance id may be anything, a pasted secret too: its op event keeps it redacted.
        instance = request.instance if context.instance is not None else risk.redact_text(request.instance)
        pending = recording.Pending(tenant or "", instance, now, payload, key, deny, request.tool, reasons)
        if deny is not None and (context.instance is None or context.tool is None):
            # The change record is hash-chained and never pruned: a name nobody declared (an
            # unknown instance or tool: a typo, or a secret pasted in its place) goes in as a
            # digest, never as it was sent. The op event keeps it, redacted, until retention.
            if context.instance is None:
                pending.subject = _digest("instance", request.instance)
                pending.reasons = [r.replace(request.instance, pending.subject) for r in pending.reasons]
            if context.tool is None:
                pending.tool = _digest("tool", request.tool)
                pending.reasons = (
                    [r.replace(request.tool, pending.tool) for r in pending.reasons] if request.tool else pending.reasons
                )
        return pending

    # ---------------------------------------------------------------- resolving

    def _resolution(self, connection: sa.Connection, state: dict[str, Any]) -> _Fleet:
        # Every apply sets applied_at (the same commit applied again after an approval too), and
        # changes outside Git bump the generation: either makes the cached resolution stale.
        key = fleetstate.key_of(state)
        fleet = self._fleet
        if fleet is not None and fleet.key == key:
            return fleet
        with self._fleet_lock:
            if self._fleet is not None and self._fleet.key == key:
                return self._fleet
            i, v, e, t = tables.instances.c, tables.agent_versions.c, tables.environments.c, tables.tool_catalogs.c
            instances = {
                r.id: r for r in connection.execute(sa.select(i.id, i.tenant, i.state, i.version, i.environment, i.template))
            }
            # Only versions that instances run (or ran) are ever decided for: a fleet keeps many
            # more versions than it deploys, and decoding every envelope made the first decision
            # after an apply wait ~0.3 s on 10,000 versions.
            deployed = sa.select(i.tenant, i.version).distinct()
            query = sa.select(v.tenant, v.name, v.envelope, v.integrity).where(sa.tuple_(v.tenant, v.name).in_(deployed))
            envelopes = {}
            for version in connection.execute(query):
                # A version whose stored genome failed verification is decided DENY, whatever its
                # envelope says, until it verifies again (audit.integrity bumps the generation).
                failed = version.integrity == "FAILED"
                envelopes[(version.tenant, version.name)] = _INTEGRITY_FAILED if failed else version.envelope
            production = {
                (r.tenant, r.name): bool((r.spec or {}).get("production"))
                for r in connection.execute(sa.select(e.tenant, e.name, e.spec))
            }
            tools: dict[str, dict[str, Any]] = {}
            for r in connection.execute(sa.select(t.tenant, t.spec).where(t.status == "ACTIVE").order_by(t.name)):
                for entry in r.spec.get("tools", []):
                    tools.setdefault(r.tenant, {}).setdefault(entry["name"], entry)
            a = tables.approvals.c
            granted = frozenset(
                (r.tenant, r.subject_name, r.transition)
                for r in connection.execute(
                    sa.select(a.tenant, a.subject_name, a.transition).where(a.subject_kind == "ToolCall", a.status == "APPROVED")
                )
            )
            horizon = max([_window(env) for env in envelopes.values() if env], default=_DEFAULT_WINDOW)
            held = holds.tenant_holds(connection)
            self._fleet = _Fleet(key, instances, envelopes, production, tools, granted, max(horizon, _DEFAULT_WINDOW), held)
            return self._fleet

    def _load_ledger(self, connection: sa.Connection, fleet: _Fleet, request: Request, now: dt.datetime) -> None:
        """Make the ledger hold what deciding ``request`` asks of it, exactly as stored now.

        Only a server (a decider with a writer) keeps a ledger; a process that decides once asks
        the table (``_Fallback``), which costs less than seeding."""
        instance = fleet.instances.get(request.instance)
        if instance is None or self._writer is None:
            return
        ledger = self.ledger
        with self._seed_lock:
            if ledger.horizon < fleet.horizon or not ledger.holds_all:
                # Every instance, seeded once (again when a longer window appears).
                ledger.seed(connection, now, fleet.horizon)
        ledger.tail(database.driver_cursor(connection))
        if request.run_id is not None:
            ledger.load_run(connection, instance.tenant, request.instance, request.run_id)

    def _assess(
        self, fleet: _Fleet, request: Request, key: str, earlier: int, now: dt.datetime, fallback: _Fallback | None
    ) -> tuple[inputs.Context, str | None, str | None] | None:
        """The policy's input for ``request`` from the resolution and the ledger; None when the
        ledger does not hold what is needed and there is no ``fallback`` to ask the table."""
        caller = fleet.callers.get(request.instance) or _caller(fleet, request.instance)
        if caller is None:
            return _UNKNOWN, None, None
        tenant = caller.tenant
        spent = self.ledger.spent(tenant, request.instance, request.run_id, now.date())
        if spent is None:
            if fallback is None:
                return None
            spent = fallback.spent(tenant, request.instance, request.run_id, now)
        since = now - caller.window
        repeats = self.ledger.repeats(tenant, request.instance, key, since)
        if repeats is None:
            if fallback is None:
                return None
            repeats = fallback.repeats(tenant, request.instance, key, since)
        context = inputs.Context(
            caller.instance,
            caller.environment,
            fleet.tools.get(tenant, {}).get(request.tool),
            caller.envelope,
            spent[0],
            spent[1],
            # Repeats still in flight in this process count: they are not stored yet.
            repeats + earlier,
            (tenant, request.instance, key) in fleet.granted,
            caller.policy_envelope,
        )
        return context, tenant, caller.version

    # ---------------------------------------------------------------- approvals

    def _approval_step(
        self,
        connection: sa.Connection,
        request: Request,
        tenant: str | None,
        key: str,
        outcome: inputs.Outcome,
        context: inputs.Context,
        version: str | None,
        now: dt.datetime,
        taken: _Taken,
    ) -> tuple[int | None, inputs.Outcome]:
        """Use a granted approval once, or find or request the approval a decision needs."""
        if tenant is None:
            return None, outcome
        approving.lock_call(connection, tenant, request.instance, key)
        if outcome.decision == "ALLOW" and context.approval_granted:
            used = approving.use_granted_call(connection, tenant, request.instance, key, now)
            if used is not None:
                return used, outcome
            # Another call used the approval first: decide again without it.
            outcome = self._evaluate(request, dataclasses.replace(context, approval_granted=False), version)
        if outcome.decision != "NEEDS_APPROVAL":
            return None, outcome
        pending = approving.pending_call(connection, tenant, request.instance, key)
        if pending is not None:
            return pending, outcome
        # What the approver is shown: the call (arguments redacted) and why it needs approval.
        args, _, reasons = _redacted(request, outcome.reasons, taken)
        call = approving.requested_call(request.instance, request.tool, args, request.cost_estimate, taken.run_id)
        rules = context.envelope.get("approvals") or {}
        return approving.request_call(connection, tenant, key, call, reasons, rules, now), outcome


_EMPTY_ENVELOPE: dict[str, Any] = {
    "maxRisk": None,
    "approvalAbove": None,
    "tools": {"allow": None, "deny": [], "requireApproval": []},
    "budgets": {"perCall": None, "perRun": None, "daily": None},
    "loop": {"threshold": None, "windowSeconds": None},
    "approvals": {
        "requiredApprovals": None,
        "approverRoles": None,
        "ttlSeconds": None,
        "escalateAfterSeconds": None,
        "escalateTo": None,
    },
    "sources": [],
}

#: The context of an instance the fleet does not declare (or the caller may not see).
_UNKNOWN = inputs.Context(None, {"name": None, "production": False}, None, _EMPTY_ENVELOPE)


#: Stands for a version whose effective envelope is not stored (decisions fail closed).
_MISSING: dict[str, Any] = dict(_EMPTY_ENVELOPE)

#: Stands for the envelope of a version whose stored genome failed verification: every decision
#: of its instances is DENY (VERSION_INTEGRITY_FAILED) until it verifies again.
_INTEGRITY_FAILED: dict[str, Any] = dict(_EMPTY_ENVELOPE)


def _replay_data(context: inputs.Context, outcome: inputs.Outcome, granted: bool, secrets: frozenset[str]) -> dict[str, Any]:
    """What a replay needs to decide this call again under another commit's policy
    (``policy.impact``): the caller as resolved, the counters in effect, whether an approval
    was used, and what the arguments showed (redacted like them). ``policy: False`` where no
    policy was asked (unknown instance, integrity failure, no envelope)."""
    instance = context.instance
    evaluated = instance is not None and context.envelope is not _MISSING and context.envelope is not _INTEGRITY_FAILED
    if not evaluated or instance is None:
        return {"policy": False}
    findings = {kind: risk.redact_text(text, secrets) for kind, text in outcome.risk.findings_dict().items()}
    return {
        "policy": True,
        "state": instance["state"],
        "template": instance["template"],
        "environment": context.environment.get("name"),
        "production": bool(context.environment.get("production")),
        "spentRun": context.spent_run,
        "spentDay": context.spent_day,
        "loop": context.same_calls,
        "granted": granted,
        "findings": findings,
    }


def _deny_type(reasons: list[str]) -> str:
    if any(r.startswith("BUDGET_EXCEEDED") for r in reasons):
        return "BUDGET_EXCEEDED"
    if any(r.startswith("LOOP_DETECTED") for r in reasons):
        return "LOOP_DETECTED"
    return "POLICY_EVALUATED"


class _Fallback:
    """Asks the table what the ledger does not hold (an older day, a longer loop window)."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection

    def spent(self, tenant: str, instance: str, run_id: str | None, now: dt.datetime) -> tuple[int, int]:
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return opevents.spent(self.connection, tenant, instance, run_id, day_start)

    def repeats(self, tenant: str, instance: str, key: str, since: dt.datetime) -> int:
        return opevents.calls_since(self.connection, tenant, instance, key, since)


#: States a tenant's kill switch does not change in a decision: they deny everything already.
_HELD_ALREADY = frozenset(("PAUSED", "QUARANTINED", "RETIRED"))


def _caller(fleet: _Fleet, name: str) -> _Caller | None:
    instance = fleet.instances.get(name)
    if instance is None:
        return None
    tenant = instance.tenant
    envelope = fleet.envelopes.get((tenant, instance.version)) or _MISSING
    state = instance.state
    if tenant in fleet.holds and state not in _HELD_ALREADY:
        state = fleet.holds[tenant]
    caller = _Caller(
        tenant,
        instance.version,
        {
            "id": instance.id,
            "state": state,
            "tenant": tenant,
            "template": instance.template,
            "version": instance.version,
        },
        {"name": instance.environment, "production": fleet.production.get((tenant, instance.environment), False)},
        envelope,
        dt.timedelta(seconds=_window(envelope)),
        envelopes.for_policy(envelope),
    )
    fleet.callers[name] = caller
    return caller


def _digest(kind: str, name: str) -> str:
    """What a change record names an undeclared instance or tool by: ``unknown tool sha256:…``."""
    return f"unknown {kind} sha256:{hashlib.sha256(name.encode('utf-8', 'replace')).hexdigest()[:16]}"


def _version_context(
    connection: sa.Connection, fleet: _Fleet, tenant: str, version: str, environment: str | None, tool: str
) -> inputs.Context:
    """The policy's input for a call of a new, ACTIVE instance of ``version`` (simulated)."""
    v = tables.agent_versions.c
    row = connection.execute(
        sa.select(v.template, v.envelope, v.integrity).where(v.tenant == tenant, v.name == version, v.status == "ACTIVE")
    ).first()
    if row is None:
        raise errors.NotFound(f"version {version!r} does not exist in tenant {tenant!r}")
    if environment is not None and (tenant, environment) not in fleet.production:
        raise errors.NotFound(f"environment {environment!r} does not exist in tenant {tenant!r}")
    envelope = _INTEGRITY_FAILED if row.integrity == "FAILED" else (row.envelope or _MISSING)
    state = fleet.holds.get(tenant, "ACTIVE")
    document = {"id": f"{version} (simulated)", "state": state, "tenant": tenant, "template": row.template, "version": version}
    production = fleet.production.get((tenant, environment), False) if environment else False
    return inputs.Context(
        document,
        {"name": environment, "production": production},
        fleet.tools.get(tenant, {}).get(tool),
        envelope,
        policy_envelope=envelopes.for_policy(envelope),
    )


class _Taken(NamedTuple):
    """A call's arguments redacted, the values taken out, and its run id redacted: what the
    stored records keep of it, worked out once per call (long arguments take a while) and
    before any write transaction begins, so none holds the store's write lock meanwhile."""

    args: dict[str, Any]
    secrets: frozenset[str]
    run_id: str | None


def _taken(request: Request) -> _Taken:
    args, secrets = risk.redact_args(request.args)
    return _Taken(args, secrets, risk.redact_text(request.run_id) if request.run_id else request.run_id)


def _redacted(
    request: Request, reasons: list[str], taken: _Taken | None = None
) -> tuple[dict[str, Any], frozenset[str], list[str]]:
    """What is stored of a call: its arguments redacted, the values taken out, and ``reasons``
    without them (a policy's reason may quote an argument; change records are append-only)."""
    args, secrets, _ = taken if taken is not None else _taken(request)
    return args, secrets, [risk.redact_text(reason, secrets) for reason in reasons]


def _cleaned(request: Request) -> Request:
    return Request(
        risk.clean(request.instance), risk.clean(request.tool), risk.clean(dict(request.args)), request.cost_estimate,
        risk.clean(request.run_id),
    )  # fmt: skip


def _window(envelope: Mapping[str, Any]) -> float:
    return float((envelope.get("loop") or {}).get("windowSeconds") or _DEFAULT_WINDOW)
