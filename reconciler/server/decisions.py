"""``POST /v1/decisions`` as a plain ASGI handler in front of the FastAPI application.

Every tool call of every agent asks this route first, so it skips what FastAPI costs per
request (its middleware, routing, dependency solving, pydantic, a worker thread): it reads the
body with orjson, checks exactly what :class:`DecisionBody` checks (falling back to the model
itself for anything unusual, so a 422 carries FastAPI's own ``{"detail": [...]}``), takes the
principal from the app's token cache (same 401 bodies), and asks ``Decider.decide_soon`` in the
event loop — whose future the decision writer resolves once the decision is stored. Calls it
cannot answer from memory go to ``Decider.decide`` in a worker thread. Answers, errors (401,
403, 422, 503) and the /metrics counters are those of the FastAPI route, which ``app`` keeps
declared for the OpenAPI document; a body past :data:`MAX_BODY` is this route's own 413. Works
with ``server.app``, which calls it first; decides through ``reconcile.deciding``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pydantic
import sqlalchemy as sa
from fastapi import encoders

from reconciler import errors
from reconciler.reconcile import deciding, tokens

__all__ = ["MAX_BODY", "STORE_DOWN", "DecisionBody", "DecisionRoute", "decide", "encode", "error_body", "error_status"]

_FIELDS = frozenset(("instance", "tool", "args", "costEstimate", "runId"))


class DecisionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    instance: str
    tool: str
    args: dict[str, Any] = {}
    costEstimate: float = pydantic.Field(default=0.0, ge=0)
    runId: str | None = None


#: What a request gets when the store cannot be reached: nothing was decided, the runtime DENYs.
STORE_DOWN = {"error": "StoreError", "message": "the store is unavailable; nothing was decided"}


def error_body(exc: errors.ArmError) -> dict[str, str]:
    return {"error": type(exc).__name__, "message": str(exc)}


def error_status(exc: errors.ArmError) -> int:
    return {
        errors.NotFound: 404,
        errors.Forbidden: 403,
        errors.Unauthenticated: 401,
        errors.ConfigError: 422,
        errors.StoreError: 503,
        errors.PolicyError: 503,  # no policy revision to decide with: the runtime treats it as DENY
    }.get(type(exc), 409)


def encode(decision: deciding.Decision) -> bytes:
    return orjson.dumps(decision.as_dict())


async def decide(decider: deciding.Decider, request: deciding.Request, who: tokens.Principal) -> deciding.Decision:
    """Decide ``request`` for ``who``: from memory in this event loop when the decider can, else
    in a worker thread; either way the decision is stored before this returns."""

    def authorize(tenant: str | None) -> None:
        if tenant is not None and not who.may_act_on(tenant, request.instance):
            raise errors.Forbidden(f"token {who.name!r} may not ask decisions for instance {request.instance!r}")

    soon = decider.decide_soon(request, authorize, asyncio.get_running_loop())
    if soon is not None:
        return await soon
    return await asyncio.to_thread(decider.decide, request, authorize)


def _parse(raw: bytes) -> tuple[deciding.Request | None, list[dict[str, Any]] | None]:
    """The request in ``raw``, or FastAPI's validation errors for it."""
    if not raw:
        return None, [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # the standard library's reading of the error, word for word as FastAPI reports it
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            return None, [
                {
                    "type": "json_invalid",
                    "loc": ["body", exc.pos],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        except UnicodeDecodeError as exc:
            return None, [
                {"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error", "input": {}, "ctx": {"error": str(exc)}}
            ]
    if type(data) is dict and data.keys() <= _FIELDS:
        instance, tool = data.get("instance"), data.get("tool")
        args = data.get("args", {})
        cost = data.get("costEstimate", 0.0)
        run = data.get("runId")
        if (
            type(instance) is str
            and type(tool) is str
            and type(args) is dict
            and type(cost) in (float, int)
            and cost >= 0
            and (run is None or type(run) is str)
        ):
            return deciding.Request(instance, tool, args, float(cost), run), None
    try:
        body = DecisionBody.model_validate(data)
    except pydantic.ValidationError as exc:
        detail = [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False)]
        return None, encoders.jsonable_encoder(detail)
    return deciding.Request(body.instance, body.tool, body.args, body.costEstimate, body.runId), None


#: Largest decision body read; a runtime's call with its arguments is a few kilobytes.
MAX_BODY = 1 << 20


class DecisionRoute:
    """ASGI handler of ``POST /v1/decisions``; ``app`` calls it ahead of FastAPI's own middleware."""

    def __init__(
        self,
        decider: deciding.Decider,
        lookup: Callable[[str | None], Awaitable[tokens.Principal | str]],
        metrics: Any,
    ) -> None:
        self.decider = decider
        self.lookup = lookup
        self.metrics = metrics

    @staticmethod
    def handles(scope: Any) -> bool:
        return scope["type"] == "http" and scope["path"] == "/v1/decisions" and scope["method"] == "POST"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                status, body = 413, orjson.dumps({"detail": f"the request body is larger than {MAX_BODY} bytes"})
                break
            chunks.append(chunk)
            if not message.get("more_body"):
                status, body = await self._answer(b"".join(chunks) if len(chunks) != 1 else chunks[0], scope["headers"])
                break
        self.metrics.count(self.metrics.requests, ("decisions", status))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, raw: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        request, invalid = _parse(raw)
        if invalid is not None and invalid[0]["type"] == "json_invalid":
            return 422, orjson.dumps({"detail": invalid})  # FastAPI reads the body before it authenticates
        authorization = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)
        try:
            who = await self.lookup(authorization)
            if isinstance(who, str):
                return 401, orjson.dumps({"detail": who})
            if invalid is not None or request is None:
                return 422, orjson.dumps({"detail": invalid})
            decision = await decide(self.decider, request, who)
        except errors.ArmError as exc:
            return error_status(exc), orjson.dumps(error_body(exc))
        except sa.exc.OperationalError:
            # A decision that cannot be recorded is not given: the runtime must treat this as DENY.
            return 503, orjson.dumps(STORE_DOWN)
        self.metrics.count(self.metrics.decisions, decision.decision)
        return 200, encode(decision)
