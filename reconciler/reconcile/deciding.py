"""Deciding tool calls: resolve the caller, ask the policy, record the answer before giving it.

``Decider.decide`` resolves instance → version → template → environment → tenant from the
applied commit, takes the version's effective envelope (stored at apply), assesses the call's
risk, counts what the instance spent and how often it made this very call, and evaluates
``data.arm.decision.result``. In the same transaction it records the decision as an op event
(arguments redacted), a DENY also as a change record (``BUDGET_EXCEEDED``, ``LOOP_DETECTED`` or
``POLICY_EVALUATED``), and a NEEDS_APPROVAL as an approval request the runtime can poll; an
approved request allows exactly that call, once. Nothing is answered that was not committed.
The policy is the applied commit's: the library plus the fleet modules stored at apply.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler import errors
from reconciler.audit import chain
from reconciler.policy import deciding, engines, library, risk
from reconciler.reconcile import metering
from reconciler.state import database, fleetstate, opevents, tables

__all__ = ["Decider", "Decision", "Request"]

log = logging.getLogger(__name__)

#: After a failed policy load, decisions use the last good revision this long before retrying.
_POLICY_RETRY_SECONDS = 5.0

_APPROVER_PERMISSIONS = {"approvals:decide", "approvals:*", "*:*"}


@dataclasses.dataclass(frozen=True)
class Request:
    instance: str
    tool: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost_estimate: float = 0.0
    run_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    decision: str
    reasons: list[str]
    decision_id: int
    policy_revision: str | None
    approval_id: int | None = None
    envelope: Mapping[str, Any] | None = None
    risk: Mapping[str, Any] | None = None

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


@dataclasses.dataclass
class _Pending:
    row: dict[str, Any]
    deny: tuple[str, str] | None  # (tenant, record type) when the decision is a DENY to record
    tool: str
    reasons: list[str]
    done: concurrent.futures.Future[int] = dataclasses.field(default_factory=concurrent.futures.Future)
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)


class _Recorder:
    """Group commit: concurrent decisions are stored together, one transaction per batch.

    Leader and followers, no thread of its own: a caller who finds no commit under way stores
    what is queued (its own decision first) in one transaction; callers arriving meanwhile queue
    and wait. The leader then hands the lead to the first of them, whose commit takes everything
    queued by then. Each caller answers only after the commit holding its decision, so nothing is
    answered that was not stored; a lone caller commits in its own thread without a hand-off.
    """

    def __init__(self, db: sa.Engine, now: Any, timer: metering.Histogram, max_batch: int = 512) -> None:
        self.db = db
        self.now = now
        self.timer = timer
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False

    def submit(self, item: _Pending) -> int:
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            self._busy = True
        if not lead:
            item.wake.wait()
            if item.done.done():
                return item.done.result()
            # Promoted: the previous leader left this caller's decision first in the queue.
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            self._commit(batch)
        finally:
            for waiting in batch:  # even if the commit was interrupted, nobody waits forever
                if not waiting.done.done():
                    waiting.done.set_exception(errors.StoreError("the decision was not recorded"))
                waiting.wake.set()
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()
                else:
                    self._busy = False
        return item.done.result()

    def close(self) -> None:
        """Nothing to stop: commits run in the callers' threads."""

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            with self.db.begin() as connection:
                ids = _store(connection, batch, self.now())
            self.timer.observe(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - one bad decision must not fail the batch: retry one by one
            for item in batch:
                try:
                    with self.db.begin() as connection:
                        (single,) = _store(connection, [item], self.now())
                except Exception as exc:  # noqa: BLE001 - the caller learns why and answers an error
                    item.done.set_exception(exc)
                else:
                    item.done.set_result(single)
                item.wake.set()
            return
        # Answers go out only now, after the commit.
        for item, decision_id in zip(batch, ids, strict=True):
            item.done.set_result(decision_id)
            item.wake.set()


def _store(connection: sa.Connection, batch: list[_Pending], now: dt.datetime) -> list[int]:
    """Insert the decisions of ``batch`` and their DENY records; returns the decision ids."""
    e = tables.op_events
    ids = [
        int(i)
        for i in connection.execute(
            e.insert().returning(e.c.id, sort_by_parameter_order=True), [item.row for item in batch]
        ).scalars()
    ]
    records = []
    for item, decision_id in zip(batch, ids, strict=True):
        if item.deny is not None:
            tenant, record_type = item.deny
            records.append(
                chain.Record(
                    tenant=tenant,
                    type=record_type,
                    object_kind="Instance",
                    object_name=item.row["instance"],
                    after={"decision": "DENY", "tool": item.tool, "reasons": item.reasons, "decisionId": decision_id},
                )
            )
    if records:
        chain.append(connection, records, now)
    return ids


class _InFlight:
    """Decisions of this process not stored yet, per call: loop detection must count them.

    ``track`` serialises decisions of the same call (instance, tool, arguments) and yields how
    many of them are still in flight; each leaves the count once its decision is stored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextlib.contextmanager
    def track(self, instance: str, key: str) -> Iterator[int]:
        ident = (instance, key)
        with self._lock:
            call_lock = self._locks.setdefault(ident, threading.Lock())
        with call_lock:
            earlier = self._counts.get(ident, 0)
            self._counts[ident] = earlier + 1
        try:
            yield earlier
        finally:
            with self._lock:
                left = self._counts.get(ident, 1) - 1
                if left:
                    self._counts[ident] = left
                else:
                    self._counts.pop(ident, None)
                    self._locks.pop(ident, None)


class Decider:
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
        #: how long storing decisions takes, per transaction (one decision or a group)
        self.write_seconds = metering.Histogram(
            "arm_op_event_write_seconds", "Time to commit decision op events, per transaction (a group commit counts once)."
        )
        self._recorder = _Recorder(db, self.clock.now, self.write_seconds) if group_commit else None
        self._inflight = _InFlight()
        #: the last failed policy load ({revision, message, at}), None once a load succeeds
        self.policy_failure: dict[str, Any] | None = None
        self._retry_at = 0.0

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()

    def ensure_policy(self, connection: sa.Connection) -> None:
        """Load the applied commit's policy into the engine if it is not loaded yet."""
        state = fleetstate.read(connection) or {}
        self._policy(connection, state.get("applied_sha"))

    def policy_status(self) -> dict[str, Any]:
        """Which engine answers, the revision it has loaded and the last failed load, for status."""
        return {
            "engine": "opa" if hasattr(self.engine, "url") else "embedded",
            "url": getattr(self.engine, "url", None),
            "loadedRevision": self.engine.revision,
            "failure": self.policy_failure,
        }

    def _policy(self, connection: sa.Connection, revision: str | None) -> None:
        if revision is not None and self.engine.revision == revision:
            return
        with self._policy_lock:
            if revision is not None and self.engine.revision == revision:
                return
            if self.engine.revision is not None and self.clock.monotonic() < self._retry_at:
                return  # the last load failed moments ago: stay on the last good revision
            c = tables.policy_modules.c
            fleet = {row.path: row.text for row in connection.execute(sa.select(c.path, c.text))}
            try:
                self.engine.load(engines.Bundle(library.modules_for(fleet, tests=False), {}, revision or "none"))
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

    def decide(self, request: Request, authorize: Callable[[str | None], None] | None = None) -> Decision:
        """Decide and record ``request``; ``authorize`` is called with the instance's tenant (None
        when unknown) before anything is recorded, and may raise to refuse the caller."""
        request = Request(
            risk.clean(request.instance), risk.clean(request.tool), risk.clean(dict(request.args)), request.cost_estimate,
            risk.clean(request.run_id),
        )  # fmt: skip
        now = self.clock.now()
        key = deciding.call_key(request.tool, request.args)
        # Counted in flight before anything is read: a repeat that leaves the count after this
        # point was committed before the reads below, so they see it; none is missed.
        tracking = contextlib.ExitStack()
        earlier = tracking.enter_context(self._inflight.track(request.instance, key))
        with contextlib.ExitStack() as on_error:
            on_error.push(lambda *exc: tracking.close())  # released here only if deciding fails before recording
            with database.reading(self.db) as connection:
                state = fleetstate.read(connection) or {}
                self._policy(connection, state.get("applied_sha"))
                revision = self.engine.revision if state.get("applied_sha") else None
                fleet = self._resolution(connection, state)
                context, tenant, version = self._context(connection, fleet, request, key, now)
                if authorize is not None:
                    authorize(tenant)
                if context.instance is not None:
                    # Repeats still in flight in this process count: they are not stored yet.
                    window = (context.envelope.get("loop") or {}).get("windowSeconds") or 60
                    since = now - dt.timedelta(seconds=window)
                    repeats = opevents.calls_since(connection, tenant or "", request.instance, key, since)
                    context = dataclasses.replace(context, same_calls=repeats + earlier)
            on_error.pop_all()
        with tracking:
            return self._decide(request, key, context, tenant, version, revision, now)

    def _decide(
        self,
        request: Request,
        key: str,
        context: deciding.Context,
        tenant: str | None,
        version: str | None,
        revision: str | None,
        now: dt.datetime,
    ) -> Decision:
        outcome = self._evaluate(request, context, version)
        approval_id = None
        if (
            outcome.decision == "NEEDS_APPROVAL"
            or (outcome.decision == "ALLOW" and context.approval_granted)
            or self._recorder is None
        ):
            # Approvals are granted and used one at a time: these decisions commit on their own,
            # re-checking the approval under a lock so one approval allows one call.
            started = time.perf_counter()
            with self.db.begin() as connection:
                approval_id, outcome = self._approval_step(connection, request, tenant, key, outcome, context, version, now)
                (decision_id,) = _store(
                    connection, [self._pending(request, key, tenant, version, revision, now, outcome, approval_id)], now
                )
            self.write_seconds.observe(time.perf_counter() - started)
        else:
            decision_id = self._recorder.submit(self._pending(request, key, tenant, version, revision, now, outcome, None))
        return Decision(
            outcome.decision, outcome.reasons, decision_id, revision, approval_id, context.envelope, outcome.risk.as_dict()
        )

    def _evaluate(self, request: Request, context: deciding.Context, version: str | None) -> deciding.Outcome:
        document, assessment = deciding.build_input(context, request.tool, request.args, request.cost_estimate)
        if context.instance is not None and context.envelope is _MISSING:
            # Fail closed: a version without its envelope was never fully applied.
            return deciding.Outcome(
                "DENY", [f"version {version} has no effective envelope yet: apply the fleet again"], assessment
            )
        return deciding.evaluate(self.engine, document, assessment)

    def _pending(
        self,
        request: Request,
        key: str,
        tenant: str | None,
        version: str | None,
        revision: str | None,
        now: dt.datetime,
        outcome: deciding.Outcome,
        approval_id: int | None,
    ) -> _Pending:
        payload = {
            "tool": request.tool,
            "args": risk.redact(dict(request.args)),
            "decision": outcome.decision,
            "reasons": outcome.reasons,
            "risk": outcome.risk.as_dict(),
            "callKey": key,
            "runId": request.run_id,
            "costEstimate": request.cost_estimate,
            "approvalId": approval_id,
            "policyRevision": revision,
            "version": version,
        }
        row = {
            "tenant": tenant or "",
            "at": now,
            "type": "DECISION",
            "instance": request.instance,
            "payload": payload,
            "call_key": key,
        }
        deny = (tenant, _deny_type(outcome.reasons)) if outcome.decision == "DENY" and tenant is not None else None
        return _Pending(row, deny, request.tool, outcome.reasons)

    # ---------------------------------------------------------------- resolving

    def _resolution(self, connection: sa.Connection, state: dict[str, Any]) -> _Fleet:
        # Every apply sets applied_at (the same commit applied again after an approval too), and
        # changes outside Git bump the generation: either makes the cached resolution stale.
        key = (state.get("applied_sha"), state.get("applied_at"), state.get("generation"))
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
            envelopes = {(r.tenant, r.name): r.envelope for r in connection.execute(sa.select(v.tenant, v.name, v.envelope))}
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
            self._fleet = _Fleet(key, instances, envelopes, production, tools, granted)
            return self._fleet

    def invalidate(self) -> None:
        """Forget the resolution data (after a change this process made outside the generation)."""
        self._fleet = None

    def _context(
        self, connection: sa.Connection, fleet: _Fleet, request: Request, key: str, now: dt.datetime
    ) -> tuple[deciding.Context, str | None, str | None]:
        instance = fleet.instances.get(request.instance)
        if instance is None:
            return deciding.Context(None, {"name": None, "production": False}, None, _EMPTY_ENVELOPE), None, None
        tenant = instance.tenant
        envelope = fleet.envelopes.get((tenant, instance.version)) or _MISSING
        tool = fleet.tools.get(tenant, {}).get(request.tool)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        spent_run, spent_day = opevents.spent(connection, tenant, request.instance, request.run_id, day_start)
        context = deciding.Context(
            instance={
                "id": instance.id,
                "state": instance.state,
                "tenant": tenant,
                "template": instance.template,
                "version": instance.version,
            },
            environment={"name": instance.environment, "production": fleet.production.get((tenant, instance.environment), False)},
            tool=tool,
            envelope=envelope,
            spent_run=spent_run,
            spent_day=spent_day,
            approval_granted=(tenant, request.instance, key) in fleet.granted,
        )
        return context, tenant, instance.version

    # ---------------------------------------------------------------- approvals

    def _approval_step(
        self,
        connection: sa.Connection,
        request: Request,
        tenant: str | None,
        key: str,
        outcome: deciding.Outcome,
        context: deciding.Context,
        version: str | None,
        now: dt.datetime,
    ) -> tuple[int | None, deciding.Outcome]:
        """Use a granted approval once, or find or request the approval a decision needs."""
        if tenant is None:
            return None, outcome
        if connection.dialect.name == "postgresql":
            # SQLite writers are serialised already; on PostgreSQL lock this call's approvals.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"arm-call:{tenant}:{request.instance}:{key}"}
            )
        a = tables.approvals
        match = (
            a.c.tenant == tenant,
            a.c.subject_kind == "ToolCall",
            a.c.subject_name == request.instance,
            a.c.transition == key,
        )
        if outcome.decision == "ALLOW" and context.approval_granted:
            row = connection.execute(sa.select(a.c.id).where(*match, a.c.status == "APPROVED").order_by(a.c.id)).first()
            used = 0
            if row is not None:
                used = connection.execute(
                    a.update().where(a.c.id == row.id, a.c.status == "APPROVED").values(status="USED", decided_at=now)
                ).rowcount
            if used:
                return int(row.id), outcome  # type: ignore[union-attr]
            # Another call used the approval first: decide again without it.
            outcome = self._evaluate(request, dataclasses.replace(context, approval_granted=False), version)
        if outcome.decision != "NEEDS_APPROVAL":
            return None, outcome
        pending = connection.execute(sa.select(a.c.id).where(*match, a.c.status == "PENDING")).first()
        if pending is not None:
            return int(pending.id), outcome
        rules = context.envelope.get("approvals") or {}
        roles = rules.get("approverRoles") or self._approver_roles(connection, tenant)
        ttl = rules.get("ttlSeconds") or 3600
        escalate, escalate_to = rules.get("escalateAfterSeconds"), rules.get("escalateTo")
        approval_id = int(
            connection.execute(
                a.insert().returning(a.c.id),
                {
                    "tenant": tenant,
                    "subject_kind": "ToolCall",
                    "subject_name": request.instance,
                    "transition": key,
                    "required": rules.get("requiredApprovals") or 1,
                    "approver_roles": roles,
                    "status": "PENDING",
                    "decisions": [],
                    "reason": "; ".join(outcome.reasons),
                    "requested_sha": None,
                    "created_at": now,
                    "expires_at": now + dt.timedelta(seconds=ttl),
                    "escalate_at": now + dt.timedelta(seconds=escalate) if escalate and escalate_to else None,
                    "escalate_to": escalate_to if escalate and escalate_to else None,
                },
            ).scalar_one()
        )
        chain.append(
            connection,
            [
                chain.Record(
                    tenant=tenant,
                    type="APPROVAL_REQUESTED",
                    object_kind="Approval",
                    object_name=str(approval_id),
                    after={
                        "subject": {"kind": "ToolCall", "instance": request.instance, "tool": request.tool},
                        "reasons": outcome.reasons,
                        "roles": roles,
                    },
                )
            ],
            now,
        )
        return approval_id, outcome

    def _approver_roles(self, connection: sa.Connection, tenant: str) -> list[str]:
        r = tables.roles.c
        rows = connection.execute(sa.select(r.name, r.spec).where(r.tenant == tenant, r.status == "ACTIVE"))
        return sorted(row.name for row in rows if set(row.spec.get("permissions", [])) & _APPROVER_PERMISSIONS)


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


#: Stands for a version whose effective envelope is not stored (decisions fail closed).
_MISSING: dict[str, Any] = dict(_EMPTY_ENVELOPE)


def _deny_type(reasons: list[str]) -> str:
    if any(r.startswith("BUDGET_EXCEEDED") for r in reasons):
        return "BUDGET_EXCEEDED"
    if any(r.startswith("LOOP_DETECTED") for r in reasons):
        return "LOOP_DETECTED"
    return "POLICY_EVALUATED"
