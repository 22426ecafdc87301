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
from reconciler.decisions import bundling, deciding, events
from reconciler.oversight import access, approving, holds
from reconciler.policy import risk
from reconciler.reconcile import reporting
from reconciler.server import decisions
from reconciler.state import database, fleetstate, opevents, tables

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Largest decision-log upload accepted, compressed or inflated.
_MAX_LOG_BYTES = 16 * 1024 * 1024


DecisionBody = decisions.DecisionBody


def _justified(text: str) -> str:
    if not text.strip():
        raise ValueError("say why the request is approved or denied; a justification may not be blank")
    return text.strip()


class ApprovalDecisionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    decision: Literal["APPROVE", "DENY"]
    #: Required for both: it is what the audit trail says about the decision.
    justification: Annotated[str, pydantic.AfterValidator(_justified)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


#: ``GET /v1/approvals?status=``: any case; every status of ``approving.STATUSES``, or ALL.
ApprovalStatus = Annotated[Literal["PENDING", "APPROVED", "DENIED", "EXPIRED", "USED", "ALL"], pydantic.BeforeValidator(_upper)]


#: ``GET /v1/instances?state=``: any case; one of the instance lifecycle's states.
InstanceState = Annotated[
    Literal["PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"],
    pydantic.BeforeValidator(_upper),
]


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

    known: dict[str, tuple[float, access.Principal | str]] = {}

    def resolve_token(token: str) -> access.Principal | str:
        with database.reading(db) as connection:
            try:
                return access.resolve(connection, token, clock.now())
            except errors.Forbidden as exc:
                return str(exc)

    def peek(authorization: str | None) -> access.Principal | str | None:
        """What :func:`lookup` answers when that needs no query, else None."""
        token = _bearer(authorization)
        if not token:
            return _NO_TOKEN
        cached = known.get(token)
        return cached[1] if cached is not None and cached[0] > clock.monotonic() else None

    async def lookup(authorization: str | None) -> access.Principal | str:
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

    async def principal(authorization: Annotated[str | None, fastapi.Header()] = None) -> access.Principal:
        who = await lookup(authorization)
        if isinstance(who, str):
            raise fastapi.HTTPException(401, who)
        return who

    Who = Annotated[access.Principal, fastapi.Depends(principal)]  # noqa: N806 - a type alias

    def operator_of(who: access.Principal) -> str:
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

    def unseen(approval_id: int, who: access.Principal) -> errors.NotFound:
        # The same answer whether the approval does not exist or the token may not see it.
        if who.instances is not None:
            return errors.NotFound(f"approval {approval_id} does not exist for the instances of token {who.name!r}")
        return errors.NotFound(f"approval {approval_id} does not exist in tenant {who.tenant!r}")

    @app.get("/v1/approvals")
    def list_approvals(who: Who, status: ApprovalStatus = "PENDING") -> list[dict[str, Any]]:
        """The approvals the token may see (an instance-scoped token: its instances' tool calls),
        each with the call asked (``request``: tool, redacted args, cost estimate, run) and
        ``reasons``; pending ones unless ``status`` says otherwise (``all``: every one)."""
        with database.reading(db) as connection:
            rows = approving.list_approvals(connection, None if status == "ALL" else status, who.tenant, instances=who.instances)
        return [_approval(r) for r in rows]

    @app.get("/v1/approvals/{approval_id}")
    def get_approval(approval_id: int, who: Who) -> dict[str, Any]:
        with database.reading(db) as connection:
            rows = approving.list_approvals(connection, None, who.tenant, approval_id, instances=who.instances)
        if not rows:
            raise unseen(approval_id, who)
        return _approval(rows[0])

    @app.post("/v1/approvals/{approval_id}/decision")
    def decide_approval(approval_id: int, body: ApprovalDecisionBody, who: Who) -> dict[str, Any]:
        """An operator's APPROVE or DENY with its justification (422 without one); 409 when the
        approval is no longer pending, 403 when the operator may not decide it."""
        operator = operator_of(who)
        with db.begin() as connection:
            a = tables.approvals.c
            row = connection.execute(
                sa.select(a.subject_kind, a.subject_name).where(a.id == approval_id, a.tenant == who.tenant)
            ).first()
            # Another tenant's approval, or (an instance-scoped token) another instance's: 404 as
            # for one that does not exist, as the GET routes answer.
            if row is None or (
                who.instances is not None and (row.subject_kind != "ToolCall" or row.subject_name not in who.instances)
            ):
                raise unseen(approval_id, who)
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
            done = holds.control_instance(connection, instance_id, body.control, operator, body.reason, clock.now())
        decider.invalidate()  # the very next decision of this process sees the control
        return {"instance": done.instance, "before": done.before, "after": done.after}

    @app.post("/v1/tenants/{tenant}/controls")
    def tenant_control(tenant: str, body: TenantControlBody, who: Who) -> dict[str, Any]:
        operator = operator_of(who)
        if tenant != who.tenant:
            raise errors.Forbidden(f"token {who.name!r} acts for tenant {who.tenant!r}, not {tenant!r}")
        with db.begin() as connection:
            done = holds.control_tenant(connection, tenant, body.control, operator, body.reason, clock.now())
        decider.invalidate()
        return {"tenant": tenant, "instances": [{"instance": d.instance, "before": d.before, "after": d.after} for d in done]}

    # ---------------------------------------------------------------- instances and events

    @app.get("/v1/instances")
    def list_instances(
        who: Who,
        tenant: str | None = None,
        environment: str | None = None,
        deployment: str | None = None,
        state: InstanceState | None = None,
    ) -> list[dict[str, Any]]:
        if tenant is not None and tenant != who.tenant:
            raise errors.Forbidden(f"token {who.name!r} acts for tenant {who.tenant!r}, not {tenant!r}")
        with database.reading(db) as connection:
            rows = reporting.instances(connection, tenant=who.tenant, environment=environment, deployment=deployment, state=state)
        return [row for row in rows if who.instances is None or row["id"] in who.instances]

    @app.post("/v1/events")
    def post_event(body: EventBody, who: Who) -> dict[str, Any]:
        who.runtime_only("sending events")
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
            # A sidecar polling the revision it has gets its 304 without the bundle being built.
            if if_none_match == _bundle_etag((fleetstate.read(connection) or {}).get("applied_sha"), who.tenant):
                return fastapi.Response(status_code=304, headers={"ETag": if_none_match})
            data, revision = bundling.bundle(connection, who.tenant)
        return fastapi.Response(data, media_type="application/gzip", headers={"ETag": _bundle_etag(revision, who.tenant)})

    tenant_engines = bundling.TenantEngines()

    def query_tenant(tenant: str, path: list[str], given: Any | None) -> dict[str, Any]:
        with database.reading(db) as connection:
            engine = tenant_engines.engine(connection, tenant)
        return engine.query(path, given)

    @app.get("/v1/data/{path:path}")
    @app.post("/v1/data/{path:path}")
    async def opa_data(path: str, request: fastapi.Request, who: Who) -> responses.JSONResponse:
        """OPA's Data API, read-only: the document at ``data.<path>`` for the body's ``input`` (GET:
        the ``input`` query parameter; none: no input), evaluated on the token's tenant's bundle —
        the answer that tenant's OPA sidecars give. ``{"result": ...}``, or ``{}`` when the
        document is undefined. The body is read as JSON whatever its Content-Type, as OPA reads it."""
        given, refused = await _data_input(request)
        if refused is not None:
            return refused
        return responses.JSONResponse(await asyncio.to_thread(query_tenant, who.tenant, path.split("/"), given))

    @app.get("/v1/data")
    @app.post("/v1/data")
    async def opa_data_root(request: fastapi.Request, who: Who) -> responses.JSONResponse:
        """OPA's Data API for the whole data document (as ``/v1/data/``)."""
        return await opa_data("", request, who)

    @app.api_route("/v1/data", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
    @app.api_route("/v1/data/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
    @app.api_route("/v1/policies/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
    def opa_writes() -> responses.JSONResponse:
        return responses.JSONResponse(
            {"code": "method_not_allowed", "message": "policy and data change only through Git: commit to the fleet repository"},
            status_code=405,
        )

    @app.post("/logs")
    async def opa_decision_logs(request: fastapi.Request, who: Who) -> fastapi.Response:
        """OPA decision-log uploads (gzipped JSON arrays), kept as op events of the token's tenant;
        a sidecar's runtime token sends them, as it sends every other event."""
        who.runtime_only("sending decision logs")
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

    groups = frozenset(_group(getattr(r, "path", "")) for r in app.routes)
    app.add_middleware(_CountRequests, metrics=metrics, groups=groups)
    app.decision_route = decisions.DecisionRoute(decider=decider, lookup=lookup, peek=peek, metrics=metrics)
    return app


def _bundle_etag(revision: str | None, tenant: str) -> str:
    return f'"{revision}:{tenant}"'


async def _data_input(request: fastapi.Request) -> tuple[Any | None, responses.JSONResponse | None]:
    """(the ``input`` of a Data API request, None), or (None, the answer OPA gives a request it
    refuses). A missing or null input is None: no input, as OPA takes it."""
    if request.method == "GET":
        text = request.query_params.get("input")
        raw = b"" if text is None else text.encode()
        where = "the input parameter"
    else:
        raw, where = b"", "the body"
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > decisions.MAX_BODY:
                message = f"the request body is larger than {decisions.MAX_BODY} bytes"
                return None, responses.JSONResponse({"code": "invalid_parameter", "message": message}, status_code=413)
    if not raw.strip():
        return None, None
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        message = f"{where} is not a JSON document: {exc}"
        return None, responses.JSONResponse({"code": "invalid_parameter", "message": message}, status_code=400)
    if request.method == "GET":
        return document, None
    if not isinstance(document, dict):
        message = 'the body must be a JSON object: {"input": ...}'
        return None, responses.JSONResponse({"code": "invalid_parameter", "message": message}, status_code=400)
    return document.get("input"), None


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


def _group(path: str) -> str:
    """A path's route group in /metrics: ``/v1/approvals/7`` → ``approvals``; others as they are."""
    return path.split("/")[2] if path.startswith("/v1/") and path.count("/") >= 2 else path


class _CountRequests:
    """Counts responses by route group and status for /metrics (plain ASGI: no extra task per
    request). Paths no route serves count as ``other``: a scan of random paths must not add a
    series each."""

    def __init__(self, app: Any, metrics: _Metrics, groups: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.groups = groups

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _group(scope["path"])
        if route not in self.groups:
            route = "other"

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
