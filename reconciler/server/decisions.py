"""``POST /v1/decisions``, answered ahead of the FastAPI application.

Every tool call of every agent asks this route first, so it skips what FastAPI costs per
request (its middleware, routing, dependency solving, pydantic, a worker thread): it reads the
body with orjson, checks exactly what :class:`DecisionBody` checks (falling back to the model
itself for anything unusual, so a 422 carries FastAPI's own ``{"detail": [...]}``), takes the
principal from the app's token cache (same 401 bodies), and asks ``Decider.decide_soon`` in the
event loop, whose decision writer calls back with the decision once it is stored. Calls it
cannot answer from memory go to ``Decider.decide`` in a worker thread. Answers, errors (401,
403, 422, 503) and the /metrics counters are those of the FastAPI route, which ``app`` keeps
declared for the OpenAPI document; a body past :data:`MAX_BODY` is this route's own 413.

:meth:`DecisionRoute.answer_soon` is the route without its transport: ``server.app`` calls the
route as ASGI before its middleware, and ``server.protocol`` hands it requests straight from
uvicorn's HTTP parser. Decides through ``decisions.deciding``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import orjson
import pydantic
from fastapi import encoders

from reconciler import errors
from reconciler.decisions import deciding
from reconciler.oversight import access
from reconciler.policy import inputs as policy_deciding

__all__ = [
    "MAX_BODY",
    "STORE_DOWN",
    "DecisionBody",
    "DecisionRoute",
    "Reply",
    "authorization",
    "encode",
    "error_body",
    "error_status",
]

log = logging.getLogger(__name__)

_FIELDS = frozenset(("instance", "tool", "args", "costEstimate", "runId"))


MAX_COST = policy_deciding.MAX_COST

_UNREAD = object()


class DecisionBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    instance: str
    tool: str
    args: dict[str, Any] = {}
    costEstimate: float = pydantic.Field(default=0.0, ge=0, le=MAX_COST, allow_inf_nan=False)
    runId: str | None = None


#: What a request gets when the store cannot be reached: nothing was decided, the runtime DENYs.
STORE_DOWN = {"error": "StoreError", "message": "the store is unavailable; nothing was decided"}


def error_body(exc: errors.ArmError) -> dict[str, str]:
    return {"error": type(exc).__name__, "message": str(exc)}


def error_status(exc: errors.ArmError) -> int:
    return {
        errors.NotFound: 404,
        errors.Forbidden: 403,
        errors.Conflict: 409,
        errors.Unauthenticated: 401,
        errors.ConfigError: 422,
        errors.StoreError: 503,
        errors.PolicyError: 503,  # no policy revision to decide with: the runtime treats it as DENY
        errors.InternalError: 500,
    }.get(type(exc), 409)


def authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The ``Authorization`` header of a request's (lower-cased) headers, as ASGI lists them."""
    return next((value.decode("latin-1") for name, value in headers if name == b"authorization"), None)


def encode(decision: deciding.Decision) -> bytes:
    return orjson.dumps(decision.as_dict())


#: A run of 16 digits: the only way a body can hold an integer past 2^53 (or one orjson reads as a
#: double, past 64 bits). Bodies without one, nearly all, are read by orjson alone.
_LONG_DIGITS = re.compile(rb"[0-9]{16}")


def _parse(raw: bytes) -> tuple[deciding.Request | None, list[dict[str, Any]] | None]:
    """The request in ``raw``, or FastAPI's validation errors for it."""
    if not raw:
        return None, [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    data: Any = _UNREAD
    if _LONG_DIGITS.search(raw) is None:
        # orjson refuses NaN, Infinity and numbers past a double's range; without a long run of
        # digits every integer is below 2^53: what it reads every engine reads alike.
        try:  # noqa: SIM105 (a try costs nothing when nothing is raised; contextlib.suppress does, on every decision)
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if data is _UNREAD:
        try:  # the standard library's reading of the error, word for word as FastAPI reports it
            data = json.loads(raw)  # NaN, Infinity and 1e400 are read here, to be refused by name below
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
        except (UnicodeDecodeError, ValueError) as exc:
            return None, [
                {"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error", "input": {}, "ctx": {"error": str(exc)}}
            ]
        found = policy_deciding.number_problem(data, "")
        if found is not None:
            path, message = found
            return None, [{"type": "value_error", "loc": ["body", *path], "msg": message, "input": None}]
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
            and 0 <= cost <= MAX_COST
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

#: The answer to a body past :data:`MAX_BODY`.
TOO_LARGE = orjson.dumps({"detail": f"the request body is larger than {MAX_BODY} bytes"})

#: Where a request's answer goes: ``reply(status, body)``, called once, in the event loop.
Reply = Callable[[int, bytes], None]


class DecisionRoute:
    """``POST /v1/decisions``: as an ASGI handler (``app`` calls it ahead of FastAPI's own
    middleware) and, through :meth:`answer_soon`, for ``server.protocol``, which answers the
    request straight from uvicorn's HTTP protocol."""

    def __init__(
        self,
        decider: deciding.Decider,
        lookup: Callable[[str | None], Awaitable[access.Principal | str]],
        peek: Callable[[str | None], access.Principal | str | None],
        counters: Any,
    ) -> None:
        self.decider = decider
        self.lookup = lookup  # the principal of an Authorization header, or a 401 message
        self.peek = peek  # the same when it is known without a query, else None
        self.counters = counters  # ``services.Services``: its ``decisions`` and ``requests`` counters
        self._tasks: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references

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
                status, body = self.refuse_too_large()
                break
            chunks.append(chunk)
            if not message.get("more_body"):
                answered, reply = _awaited()
                self.answer_soon(b"".join(chunks) if len(chunks) != 1 else chunks[0], authorization(scope["headers"]), reply)
                status, body = await answered
                break
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def refuse_too_large(self) -> tuple[int, bytes]:
        self.counters.requests.inc(("decisions", 413))
        return 413, TOO_LARGE

    def answer_soon(self, raw: bytes, authorization: str | None, reply: Reply) -> None:
        """Answer the request body ``raw`` through ``reply``, from the running event loop: at once
        when it is refused, once stored when it is decided. The usual call (a known token, a
        decision from memory) makes no task: ``reply`` runs from the stored decision's callback."""

        def answer(status: int, body: bytes) -> None:
            self.counters.requests.inc(("decisions", status))
            reply(status, body)

        request, invalid = _parse(raw)
        if invalid is not None and invalid[0]["type"] == "json_invalid":
            answer(422, orjson.dumps({"detail": invalid}))  # FastAPI reads the body before it authenticates
            return
        who = self.peek(authorization)
        if who is None:  # a token to look up, off the loop; then as below
            self._task(self._looked_up(request, invalid, authorization)).add_done_callback(lambda done: answer(*_settled(done)))
        elif isinstance(who, str):
            answer(401, orjson.dumps({"detail": who}))
        elif invalid is not None or request is None:
            answer(422, orjson.dumps({"detail": invalid}))
        else:
            self._decide(request, who, answer)

    async def _looked_up(
        self, request: deciding.Request | None, invalid: list[dict[str, Any]] | None, authorization: str | None
    ) -> tuple[int, bytes]:
        who = await self.lookup(authorization)
        if isinstance(who, str):
            return 401, orjson.dumps({"detail": who})
        if invalid is not None or request is None:
            return 422, orjson.dumps({"detail": invalid})
        answered, reply = _awaited()
        self._decide(request, who, reply)
        return await answered

    def _decide(self, request: deciding.Request, who: access.Principal, reply: Reply) -> None:
        try:
            who.runtime_only("asking decisions")
        except errors.Forbidden as exc:
            reply(*_refusal(exc))
            return

        def authorize(tenant: str | None) -> None:
            if tenant is not None and not who.may_act_on(tenant, request.instance):
                raise errors.Forbidden(f"token {who.name!r} may not ask decisions for instance {request.instance!r}")

        def decided(decision: deciding.Decision | None, error: BaseException | None) -> None:
            if decision is not None:
                self.counters.decisions.inc(decision.decision)
                reply(200, encode(decision))
            else:
                reply(*_failed(error))

        try:
            if self.decider.decide_soon(request, authorize, asyncio.get_running_loop(), decided):
                return  # the writer calls ``decided`` once the decision is stored
        except errors.ArmError as exc:
            reply(*_refusal(exc))
            return

        # The decider's exact path, which reads the store: in a worker thread.
        def finished(task: asyncio.Task[deciding.Decision]) -> None:
            if task.cancelled() or task.exception() is not None:
                decided(None, None if task.cancelled() else task.exception())
            else:
                decided(task.result(), None)

        self._task(asyncio.to_thread(self.decider.decide, request, authorize, who.tenant)).add_done_callback(finished)

    def _task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _awaited() -> tuple[asyncio.Future[tuple[int, bytes]], Reply]:
    """A future of an answer and the reply that settles it (unless its waiter was cancelled)."""
    answered: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    def reply(status: int, body: bytes) -> None:
        if not answered.done():
            answered.set_result((status, body))

    return answered, reply


def _settled(future: asyncio.Future[Any]) -> tuple[int, bytes]:
    """The answer a finished future of ``(status, body)`` gives, or its failure's answer."""
    if future.cancelled() or future.exception() is not None:
        return _failed(None if future.cancelled() else future.exception())
    return future.result()  # type: ignore[no-any-return]


def _failed(exc: BaseException | None) -> tuple[int, bytes]:
    """The answer to a request whose handling failed with ``exc`` (None: it was cancelled)."""
    if exc is None:
        return 503, orjson.dumps({"error": "StoreError", "message": "the request was cancelled; nothing was decided"})
    if isinstance(exc, errors.ArmError) and not isinstance(exc, errors.InternalError):
        return _refusal(exc)
    # A bug after the request was taken in (in the decider's thread, say): a 500, the traceback logged.
    log.error("answering a decision request failed", exc_info=exc)
    return 500, orjson.dumps({"error": "InternalError", "message": "the request failed; nothing was decided"})


def _refusal(exc: errors.ArmError) -> tuple[int, bytes]:
    # A StoreError is a 503: a decision that cannot be recorded is not given, and the runtime
    # must treat it as DENY.
    return error_status(exc), orjson.dumps(error_body(exc))
