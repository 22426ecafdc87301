"""The HTTP API's application: one FastAPI app over one database, its routers and its jobs.

``create_app`` builds the :class:`services.Services` every router reads (store, clock, decider,
token cache, counters), mounts one router per concern — ``operators`` (approvals, emergency
controls, instances), ``events`` (what runtimes report), ``evidence`` (evaluation runs, version
scorecards), ``opa`` (bundle, Data API, decision logs), ``health`` (health, readiness, metrics,
status, webhooks), ``keys`` (the public signing keys), ``notifications`` (what channels were
told) — and puts the decision fast
path (``decisions.DecisionRoute``) ahead of FastAPI's own stack. Every ``/v1`` route needs a
bearer token (``server.auth``): runtime tokens ask decisions and send events for their tenant's
instances; operator tokens decide approvals and pull emergency controls as their Operator, whose
roles (from Git) say what is allowed. 401 means no usable token, 403 a token that may not do
this; both say why. Handlers are plain functions run in the server's thread pool; each call is
one transaction. Errors leave as the project's own types (``errors.ArmError``), each mapped to
its status once, here.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import fastapi
from fastapi import responses

from reconciler import clock as clock_
from reconciler import errors
from reconciler.decisions import deciding
from reconciler.evidence import keys as keys_
from reconciler.oversight import approving
from reconciler.server import auth, decisions, events, evidence, health, keys, notifications, opa, operators, services
from reconciler.state import database

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: The request bodies FastAPI validates, named here for the OpenAPI document's readers.
DecisionBody = decisions.DecisionBody
Runner = services.Runner


def create_app(
    db: database.Engine,
    *,
    clock: clock_.Clock | None = None,
    decider: deciding.Decider | None = None,
    sweep_seconds: float | None = 30.0,
    policy_seconds: float | None = 2.0,
    runner: services.Runner | None = None,
    signer: keys_.Signer | None = None,
) -> fastapi.FastAPI:
    """The application. Every ``sweep_seconds`` it expires and escalates approvals; every
    ``policy_seconds`` it loads the applied commit's policy into the engine (None: never).
    With a ``runner`` (the daemon) it also takes Git webhooks and reports the daemon's state.
    With a ``signer`` it signs the OPA bundles it serves (and publishes the key at /v1/keys)."""
    clock = clock or clock_.SystemClock()
    # Group commit: concurrent decisions share a transaction (each still waits for its commit).
    own_decider = decider is None
    decider = decider or deciding.Decider(db, clock=clock, group_commit=True)
    served = services.Services(db=db, clock=clock, decider=decider, tokens=auth.Tokens(db, clock), runner=runner, signer=signer)
    if signer is not None:
        with database.transaction(db) as connection:
            keys_.register(connection, signer.public, signer.source, clock.now())

    def sweep_once() -> approving.Swept:
        with database.transaction(db) as connection:
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
    app.state.services = served

    @app.exception_handler(errors.ArmError)
    def _arm_error(request: fastapi.Request, exc: errors.ArmError) -> responses.JSONResponse:
        if isinstance(exc, errors.InternalError):
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return responses.JSONResponse(decisions.error_body(exc), status_code=decisions.error_status(exc))

    @app.post("/v1/decisions")
    async def decide(body: DecisionBody, who: auth.Who) -> responses.Response:
        """Documents the route in the OpenAPI document. ``_Api`` hands every such request to
        ``decisions.DecisionRoute`` before FastAPI routes it, so this never runs."""
        raise errors.InternalError("POST /v1/decisions is answered by decisions.DecisionRoute")

    routers = (operators.router, events.router, evidence.router, opa.router, health.router, keys.router, notifications.router)
    for router in routers:
        app.include_router(router)

    routes = [*app.routes, *(route for router in routers for route in router.routes)]
    groups = frozenset(_group(getattr(r, "path", "")) for r in routes)
    app.add_middleware(_CountRequests, counter=served.requests, groups=groups)
    app.decision_route = decisions.DecisionRoute(
        decider=decider, lookup=served.tokens.lookup, peek=served.tokens.peek, counters=served
    )
    return app


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

    def __init__(self, app: Any, counter: Any, groups: frozenset[str]) -> None:
        self.app = app
        self.counter = counter
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
                self.counter.inc((route, message["status"]))
            await send(message)

        await self.app(scope, receive, sending)


async def _every(seconds: float, job: Callable[[], Any]) -> None:
    """Run ``job`` in a worker thread every ``seconds``; a failed run is logged and retried next time."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(job)
        except errors.ArmError as exc:  # the store is down for a moment, say: next time
            log.warning("periodic job %s: %s", getattr(job, "__name__", job), exc)
