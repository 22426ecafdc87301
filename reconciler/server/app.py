"""The HTTP API: decisions, approvals, emergency controls, instances, events, status, health.

``create_app`` builds a FastAPI application over one database. Every ``/v1`` route needs a
bearer token (``armctl token create``): runtime tokens ask decisions and send events for
their tenant's instances; operator tokens decide approvals and pull emergency controls as
their Operator, whose roles (from Git) say what is allowed. 401 means no usable token, 403 a
token that may not do this; both say why. ``/healthz``, ``/readyz`` and ``/metrics`` are open.
Handlers are plain functions run in the server's thread pool; each call is one transaction.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations, and the
# dependency alias they use is local to create_app.
import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Literal, Protocol

import fastapi
import pydantic
import sqlalchemy as sa
from fastapi import responses

from reconciler import clock as clock_
from reconciler import errors
from reconciler.policy import risk
from reconciler.reconcile import approving, bundling, controlling, deciding, events, reporting, tokens
from reconciler.server import decisions
from reconciler.state import database, fleetstate, opevents, tables

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Largest decision-log upload accepted, compressed or inflated.
_MAX_LOG_BYTES = 16 * 1024 * 1024


DecisionBody = decisions.DecisionBody


class ApprovalDecisionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    decision: Literal["APPROVE", "DENY"]
    justification: str = ""


class ControlBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    control: Literal["pause", "resume", "quarantine", "read-only", "drain"]
    reason: str = ""


class TenantControlBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    control: Literal["pause", "resume", "quarantine"]
    reason: str = ""


class EventBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    type: Literal["HEARTBEAT", "COST", "TOOL_RESULT"]
    instance: str


class _Metrics:
    """Counters for /metrics: decisions by result, requests by route group and status."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decisions: Counter[str] = Counter()
        self.requests: Counter[tuple[str, int]] = Counter()

    def count(self, counter: Counter[Any], key: Any) -> None:
        with self.lock:
            counter[key] += 1


class Runner(Protocol):
    """What the daemon (``armctl run``) adds to the API; ``armctl serve`` runs without one."""

    def readiness(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> list[str]: ...

    def webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]: ...


def create_app(
    db: sa.Engine,
    *,
    clock: clock_.Clock | None = None,
    decider: deciding.Decider | None = None,
    sweep_seconds: float | None = 30.0,
    policy_seconds: float | None = 2.0,
    runner: Runner | None = None,
) -> fastapi.FastAPI:
    """The application. Every ``sweep_seconds`` it expires and escalates approvals; every
    ``policy_seconds`` it loads the applied commit's policy into the engine (None: never).
    With a ``runner`` (the daemon) it also takes Git webhooks and reports the daemon's state."""
    clock = clock or clock_.SystemClock()
    # Group commit: concurrent decisions share a transaction (each still waits for its commit).
    own_decider = decider is None
    decider = decider or deciding.Decider(db, clock=clock, group_commit=True)
    metrics = _Metrics()

    def sweep_once() -> approving.Swept:
        with db.begin() as connection:
            return approving.sweep(connection, clock.now())

    def load_policy() -> None:
        # A newly applied commit reaches the engine (an OPA: pushed) without waiting for a decision.
        with database.reading(db) as connection:
            decider.ensure_policy(connection)

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        jobs = [(policy_seconds, load_policy), (sweep_seconds, sweep_once)]
        tasks = [asyncio.create_task(_every(seconds, job)) for seconds, job in jobs if seconds]
        try:
            yield
        finally:
            if own_decider:
                await asyncio.to_thread(decider.close)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = _Api(
        title="ARM Reconciler",
        version="1",
        description="Policy decisions, approvals and emergency controls for agent fleets.",
        lifespan=lifespan,
    )

    @app.exception_handler(errors.ArmError)
    def _arm_error(request: fastapi.Request, exc: errors.ArmError) -> responses.JSONResponse:
        return responses.JSONResponse(decisions.error_body(exc), status_code=decisions.error_status(exc))

    @app.exception_handler(sa.exc.OperationalError)
    def _store_down(request: fastapi.Request, exc: sa.exc.OperationalError) -> responses.JSONResponse:
        # A decision that cannot be recorded is not given: the runtime must treat this as DENY.
        return responses.JSONResponse(decisions.STORE_DOWN, status_code=503)

    known: dict[str, tuple[float, tokens.Principal | str]] = {}

    def resolve_token(token: str) -> tokens.Principal | str:
        with database.reading(db) as connection:
            try:
                return tokens.resolve(connection, token, clock.now())
            except errors.Forbidden as exc:
                return str(exc)

    def peek(authorization: str | None) -> tokens.Principal | str | None:
        """What :func:`lookup` answers when that needs no query, else None."""
        token = _bearer(authorization)
        if not token:
            return _NO_TOKEN
        cached = known.get(token)
        return cached[1] if cached is not None and cached[0] > clock.monotonic() else None

    async def lookup(authorization: str | None) -> tokens.Principal | str:
        """The principal of an ``Authorization`` header, or why there is none (a 401 message)."""
        # Tokens are looked up at most once per _TOKEN_CACHE_SECONDS: a revocation or expiry takes
        # effect within that time, and a decision does not wait for a token query.
        who = peek(authorization)
        if who is not None:
            return who
        if len(known) >= _TOKEN_CACHE_SIZE:
            known.clear()
        token = _bearer(authorization)
        known[token] = cached = (clock.monotonic() + _TOKEN_CACHE_SECONDS, await asyncio.to_thread(resolve_token, token))
        return cached[1]

    async def principal(authorization: Annotated[str | None, fastapi.Header()] = None) -> tokens.Principal:
        who = await lookup(authorization)
        if isinstance(who, str):
            raise fastapi.HTTPException(401, who)
        return who

    Who = Annotated[tokens.Principal, fastapi.Depends(principal)]  # noqa: N806 - a type alias

    def operator_of(who: tokens.Principal) -> str:
        if who.kind != "operator" or who.operator is None:
            raise errors.Forbidden(f"token {who.name!r} is a {who.kind} token; this needs an operator token")
        return who.operator

    def instance_tenant(connection: sa.Connection, instance: str) -> str | None:
        i = tables.instances.c
        return connection.execute(sa.select(i.tenant).where(i.id == instance)).scalar()

    # ---------------------------------------------------------------- decisions

    @app.post("/v1/decisions")
    async def decide(body: DecisionBody, who: Who) -> responses.Response:
        """Documents the route in the OpenAPI document. ``_Api`` hands every such request to
        ``decisions.DecisionRoute`` before FastAPI routes it, so this never runs."""
        raise RuntimeError("POST /v1/decisions is answered by decisions.DecisionRoute")

    # ---------------------------------------------------------------- approvals

    @app.get("/v1/approvals")
    def list_approvals(who: Who, status: str | None = "PENDING") -> list[dict[str, Any]]:
        with database.reading(db) as connection:
            rows = approving.list_approvals(connection, None if status in (None, "ALL", "all") else status, who.tenant)
        return [_approval(r) for r in rows]

    @app.get("/v1/approvals/{approval_id}")
    def get_approval(approval_id: int, who: Who) -> dict[str, Any]:
        with database.reading(db) as connection:
            rows = approving.list_approvals(connection, None, who.tenant, approval_id)
        if not rows:
            raise errors.NotFound(f"approval {approval_id} does not exist in tenant {who.tenant!r}")
        return _approval(rows[0])

    @app.post("/v1/approvals/{approval_id}/decision")
    def decide_approval(approval_id: int, body: ApprovalDecisionBody, who: Who) -> dict[str, Any]:
        operator = operator_of(who)
        with db.begin() as connection:
            a = tables.approvals.c
            if connection.execute(sa.select(a.tenant).where(a.id == approval_id)).scalar() not in (who.tenant, None):
                raise errors.Forbidden(f"approval {approval_id} belongs to another tenant")
            result = approving.decide(connection, approval_id, operator, body.decision, body.justification, clock.now())
        decider.invalidate()  # the next decision of this process sees the approval
        return {"id": result.approval_id, "status": result.status, "approvals": result.approvals, "required": result.required}

    # ---------------------------------------------------------------- emergency controls

    @app.post("/v1/instances/{instance_id}/controls")
    def control(instance_id: str, body: ControlBody, who: Who) -> dict[str, Any]:
        operator = operator_of(who)
        with db.begin() as connection:
            tenant = instance_tenant(connection, instance_id)
            if tenant is None:
                raise errors.NotFound(f"instance {instance_id!r} does not exist")
            if tenant != who.tenant:
                raise errors.Forbidden(f"instance {instance_id!r} belongs to another tenant")
            done = controlling.control_instance(connection, instance_id, body.control, operator, body.reason, clock.now())
        decider.invalidate()  # the very next decision of this process sees the control
        return {"instance": done.instance, "before": done.before, "after": done.after}

    @app.post("/v1/tenants/{tenant}/controls")
    def tenant_control(tenant: str, body: TenantControlBody, who: Who) -> dict[str, Any]:
        operator = operator_of(who)
        if tenant != who.tenant:
            raise errors.Forbidden(f"token {who.name!r} acts for tenant {who.tenant!r}, not {tenant!r}")
        with db.begin() as connection:
            done = controlling.control_tenant(connection, tenant, body.control, operator, body.reason, clock.now())
        decider.invalidate()
        return {"tenant": tenant, "instances": [{"instance": d.instance, "before": d.before, "after": d.after} for d in done]}

    # ---------------------------------------------------------------- instances and events

    @app.get("/v1/instances")
    def list_instances(
        who: Who, environment: str | None = None, deployment: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        i = tables.instances.c
        query = sa.select(
            i.id, i.tenant, i.deployment, i.environment, i.template, i.version, i.state, i.held_by, i.health, i.last_heartbeat
        )
        query = query.where(i.tenant == who.tenant)
        if environment:
            query = query.where(i.environment == environment)
        if deployment:
            query = query.where(i.deployment == deployment)
        query = query.where(i.state == state.upper()) if state else query.where(i.state != "RETIRED")
        with database.reading(db) as connection:
            rows = connection.execute(query.order_by(i.id)).mappings().all()
        out = []
        for row in rows:
            if who.instances is None or row["id"] in who.instances:
                item = dict(row)
                item["last_heartbeat"] = item["last_heartbeat"].isoformat() if item["last_heartbeat"] else None
                out.append(item)
        return out

    @app.post("/v1/events")
    def post_event(body: EventBody, who: Who) -> dict[str, Any]:
        if not who.may_act_on(who.tenant, body.instance):
            raise errors.Forbidden(f"token {who.name!r} may not send events for instance {body.instance!r}")
        with db.begin() as connection:
            result = events.record(connection, who.tenant, body.model_dump(), clock.now())
        decider.invalidate()  # a cost tick counts in this process's next decision
        return result

    # ---------------------------------------------------------------- OPA compatibility

    @app.get("/v1/bundles/arm.tar.gz")
    def opa_bundle(who: Who, if_none_match: Annotated[str | None, fastapi.Header()] = None) -> fastapi.Response:
        with database.reading(db) as connection:
            data, revision = bundling.bundle(connection, who.tenant)
        etag = f'"{revision}:{who.tenant}"'
        if if_none_match == etag:
            return fastapi.Response(status_code=304, headers={"ETag": etag})
        return fastapi.Response(data, media_type="application/gzip", headers={"ETag": etag})

    @app.post("/v1/data/{path:path}")
    def opa_data(path: str, who: Who, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """OPA's Data API, read-only: evaluate ``data.<path>`` with ``input`` on the applied policy."""
        rule = "data." + ".".join(part for part in path.split("/") if part)
        with database.reading(db) as connection:
            decider.ensure_policy(connection)
        value = decider.engine.query(rule, (body or {}).get("input") or {})
        return {} if value is None else {"result": _jsonable(value)}

    @app.api_route("/v1/data/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
    @app.api_route("/v1/policies/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
    def opa_writes(path: str) -> responses.JSONResponse:
        return responses.JSONResponse(
            {"code": "method_not_allowed", "message": "policy and data change only through Git: commit to the fleet repository"},
            status_code=405,
        )

    @app.post("/logs")
    async def opa_decision_logs(request: fastapi.Request, who: Who) -> fastapi.Response:
        """OPA decision-log uploads (gzipped JSON arrays), kept as op events of the token's tenant."""
        raw = await request.body()
        if len(raw) > _MAX_LOG_BYTES:
            raise errors.ConfigError(f"decision-log upload above {_MAX_LOG_BYTES} bytes")
        if request.headers.get("content-encoding") == "gzip" or raw[:2] == b"\x1f\x8b":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                raw = inflater.decompress(raw, _MAX_LOG_BYTES)
            except zlib.error as exc:
                raise errors.ConfigError(f"decision logs are not valid gzip: {exc}") from exc
            if inflater.unconsumed_tail:
                raise errors.ConfigError(f"decision logs inflate above {_MAX_LOG_BYTES} bytes")
        try:
            entries = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise errors.ConfigError(f"decision logs must be a JSON array: {exc}") from exc
        if not isinstance(entries, list):
            raise errors.ConfigError("decision logs must be a JSON array")
        now = clock.now()
        with db.begin() as connection:
            opevents.add(
                connection,
                [
                    {"tenant": who.tenant, "at": now, "type": "OPA_DECISION", "instance": None, "payload": risk.redact(e)}
                    for e in entries
                    if isinstance(e, dict)
                ],
            )
        return fastapi.Response(status_code=204)

    # ---------------------------------------------------------------- status, health, metrics

    @app.get("/v1/status")
    def status(who: Who) -> dict[str, Any]:
        with database.reading(db) as connection:
            report = reporting.status(connection, tenant=who.tenant)
        report["policy"] = decider.policy_status()
        if runner is not None:
            report["daemon"] = runner.status()
        return report

    @app.post("/v1/webhooks/git", status_code=202)
    async def git_webhook(request: fastapi.Request) -> dict[str, Any]:
        """A Git host's push webhook (GitHub: X-Hub-Signature-256; GitLab: X-Gitlab-Token): refresh now."""
        if runner is None:
            raise errors.NotFound("webhooks need the daemon: run 'armctl run', not 'armctl serve'")
        body = await request.body()
        if len(body) > _MAX_LOG_BYTES:
            raise errors.ConfigError(f"webhook body above {_MAX_LOG_BYTES} bytes")
        return runner.webhook({k.lower(): v for k, v in request.headers.items()}, body)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> responses.JSONResponse:
        if runner is not None:
            ready, reason = runner.readiness()
            if not ready:
                return responses.JSONResponse({"ready": False, "reason": reason}, status_code=503)
        try:
            database.require_current(db)
            with database.reading(db) as connection:
                state = fleetstate.read(connection)
        except errors.StoreError as exc:
            return responses.JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
        if not state or not state.get("applied_sha"):
            return responses.JSONResponse({"ready": False, "reason": "no commit has been applied yet"}, status_code=503)
        return responses.JSONResponse({"ready": True, "appliedSha": state["applied_sha"]})

    @app.get("/metrics", response_class=responses.PlainTextResponse)
    def prometheus() -> str:
        lines = ["# HELP arm_decisions_total Decisions answered, by result.", "# TYPE arm_decisions_total counter"]
        with metrics.lock:
            for result in ("ALLOW", "NEEDS_APPROVAL", "DENY"):
                lines.append(f'arm_decisions_total{{decision="{result}"}} {metrics.decisions[result]}')
            lines += [
                "# HELP arm_http_requests_total HTTP requests, by route group and status.",
                "# TYPE arm_http_requests_total counter",
            ]
            for (route, code), n in sorted(metrics.requests.items()):
                lines.append(f'arm_http_requests_total{{route="{route}",status="{code}"}} {n}')
        with database.reading(db) as connection:
            state = fleetstate.read(connection) or {}
            pending = connection.execute(sa.select(sa.func.count()).where(tables.approvals.c.status == "PENDING")).scalar_one()
        lines += [
            "# HELP arm_approvals_pending Approval requests waiting for a decision.",
            "# TYPE arm_approvals_pending gauge",
            f"arm_approvals_pending {pending}",
            "# HELP arm_applied_revision_info The applied commit.",
            "# TYPE arm_applied_revision_info gauge",
            f'arm_applied_revision_info{{sha="{state.get("applied_sha") or ""}"}} 1',
            *decider.write_seconds.render(),
        ]
        if runner is not None:
            lines += runner.metrics()
        return "\n".join(lines) + "\n"

    app.add_middleware(_CountRequests, metrics=metrics)
    app.decision_route = decisions.DecisionRoute(decider=decider, lookup=lookup, peek=peek, metrics=metrics)
    return app


def _jsonable(value: Any) -> Any:
    if isinstance(value, set):
        return sorted((_jsonable(v) for v in value), key=json.dumps)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


_NO_TOKEN = "missing bearer token: send 'Authorization: Bearer <token>' (armctl token create)"


def _bearer(authorization: str | None) -> str:
    return authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else ""


#: How long a looked-up API token is trusted before it is looked up again (revocation delay).
_TOKEN_CACHE_SECONDS = 1.0
_TOKEN_CACHE_SIZE = 10_000


class _Api(fastapi.FastAPI):
    """The FastAPI application, with ``POST /v1/decisions`` answered before its middleware stack
    (error pages, telemetry, the body-limit layer, request counting: ~50 µs a request, a third of
    what a decision may cost). ``decisions.DecisionRoute`` handles its own errors, its own body
    limit and its counters."""

    decision_route: decisions.DecisionRoute | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        route = self.decision_route
        if route is not None and route.handles(scope):
            await route(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class _CountRequests:
    """Counts responses by route group and status for /metrics (plain ASGI: no extra task per request)."""

    def __init__(self, app: Any, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path.split("/")[2] if path.startswith("/v1/") and path.count("/") >= 2 else path

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count(self.metrics.requests, (route, message["status"]))
            await send(message)

        await self.app(scope, receive, sending)


async def _every(seconds: float, job: Callable[[], Any]) -> None:
    """Run ``job`` in a worker thread every ``seconds``; a failed run is logged and retried next time."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(job)
        except errors.ArmError as exc:
            log.warning("periodic job %s: %s", getattr(job, "__name__", job), exc)
        except sa.exc.SQLAlchemyError as exc:  # the store is down for a moment: next time
            log.warning("periodic job %s: the store: %s", getattr(job, "__name__", job), getattr(exc, "orig", None) or exc)


def _approval(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
    out["approvals"] = sum(1 for d in row["decisions"] if d["decision"] == "APPROVE")
    out["roles"] = approving.roles_of(row)
    return out
