"""``POST /v1/decisions``, answered ahead of the FastAPI application.

Every tool call of every agent asks this route first, so it skips what FastAPI costs per
request (its middleware, routing, dependency solving, pydantic, a worker thread): it reads the
body with orjson, checks exactly what :class:`DecisionBody` checks (falling back to the model
itself for anything unusual; a 422 names each problem, in the API's one error shape), takes the
principal from the app's token cache before it parses anything (same 401 bodies), and asks ``Decider.decide_soon`` in the
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

from reconciler import errors
from reconciler.decisions import deciding
from reconciler.oversight import access
from reconciler.policy import inputs as policy_deciding
from reconciler.server import bodies, guarding

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
    costEstimate: float = pydantic.Field(default=0.0, ge=0, le=MAX_COST, allow_inf_nan=False, strict=True)
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
    """The request in ``raw``, or the problems with it (``bodies.problem``)."""
    if not raw:
        return None, [bodies.problem("missing", ["body"], "Field required")]
    try:
        bodies.bounded(raw)
    except bodies.Invalid as exc:
        return None, exc.problems()
    data: Any = _UNREAD
    if _LONG_DIGITS.search(raw) is None:
        # orjson refuses NaN, Infinity, numbers past a double's range, lone surrogates and nesting
        # past 1,024; without a long run of digits every integer is below 2^53: what it reads
        # every engine reads alike.
        try:  # noqa: SIM105 (a try costs nothing when nothing is raised; contextlib.suppress does, on every decision)
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if data is _UNREAD:
        try:  # the exact integers, to refuse those past 2^53 by name; NaN and 1e400 likewise
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = _UNREAD
        if data is not _UNREAD:
            found = policy_deciding.number_problem(data, "")
            if found is not None:
                path, message = found
                return None, [bodies.problem("value_error", ["body", *path], message)]
        try:  # what is left to refuse: malformed JSON, a lone surrogate, nesting past 1,024
            bodies.parse(raw)
        except bodies.Invalid as exc:
            return None, exc.problems()
    if len(raw) > _DEEP_AT:  # only a body this long can nest past MAX_DEPTH
        try:
            bodies.check(data)
        except bodies.Invalid as exc:
            return None, exc.problems()
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
        return None, [bodies.problem(e["type"], ["body", *e["loc"]], e["msg"]) for e in exc.errors(include_url=False)]
    return deciding.Request(body.instance, body.tool, body.args, body.costEstimate, body.runId), None


#: The shortest body that can nest past ``bodies.MAX_DEPTH`` (two bytes a level).
_DEEP_AT = 2 * bodies.MAX_DEPTH

#: Past this size a decision is decided in a worker thread (``Decider.decide``): assessing and
#: redacting large arguments must not hold the event loop.
LARGE_BODY = 16 * 1024


def _invalid(problems: list[dict[str, Any]]) -> bytes:
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    return orjson.dumps(bodies.error("ValidationError", f"{where}: {first['msg']}" if where else first["msg"], problems))


#: Largest decision body read; a runtime's call with its arguments is a few kilobytes.
MAX_BODY = bodies.limit_of("/v1/decisions")

#: The answer to a body past :data:`MAX_BODY`.
TOO_LARGE = orjson.dumps(bodies.error("TooLarge", f"the request body is larger than {MAX_BODY} bytes"))

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
        caps: guarding.Caps | None = None,
    ) -> None:
        self.decider = decider
        self.caps = caps or guarding.Caps()
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
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            status, body = self.refuse_too_large()
            await guarding.reply(send, status, orjson.loads(body), close=True)
            return
        while True:
            try:
                async with asyncio.timeout(guarding.BODY_SECONDS):
                    message = await receive()
            except TimeoutError:
                late = bodies.error("Timeout", f"the request body did not arrive within {guarding.BODY_SECONDS:g} s")
                await guarding.reply(send, 408, late, close=True)
                return
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

        who = self.peek(authorization)
        if who is None:  # a token to look up, off the loop; then as below
            self._task(self._looked_up(raw, authorization)).add_done_callback(lambda done: answer(*_settled(done)))
        elif isinstance(who, str):
            answer(401, orjson.dumps(bodies.error("Unauthenticated", who)))
        else:
            self._parsed(raw, who, answer)

    async def _looked_up(self, raw: bytes, authorization: str | None) -> tuple[int, bytes]:
        who = await self.lookup(authorization)
        if isinstance(who, str):
            return 401, orjson.dumps(bodies.error("Unauthenticated", who))
        answered, reply = _awaited()
        self._parsed(raw, who, reply)
        return await answered

    def _parsed(self, raw: bytes, who: access.Principal, reply: Reply) -> None:
        """Parse ``raw`` (the caller is authenticated by now), then decide within its token's caps:
        decisions in flight, and of those, decisions with a large body (each is scanned, stored
        and synced at length: a token's flood of them would hold every other decision's commit)."""
        name, caps = who.name, self.caps
        large = len(raw) > LARGE_BODY
        if large and not caps.enter(name, "large decisions", guarding.PER_TOKEN_LARGE_DECISIONS):
            message = (
                f"token {name!r} has {guarding.PER_TOKEN_LARGE_DECISIONS} decisions with bodies over "
                f"{LARGE_BODY} bytes in flight: retry"
            )
            reply(429, orjson.dumps(bodies.error("TooManyRequests", message)))
            return

        def left(status: int, body: bytes) -> None:
            if large:
                caps.leave(name, "large decisions")
            reply(status, body)

        request, invalid = _parse(raw)
        if invalid is not None or request is None:
            left(422, _invalid(invalid or [bodies.problem("missing", ["body"], "Field required")]))
            return
        if not caps.enter(name, "decisions", guarding.PER_TOKEN_DECISIONS):
            message = f"token {name!r} has {guarding.PER_TOKEN_DECISIONS} decisions in flight: retry"
            left(429, orjson.dumps(bodies.error("TooManyRequests", message)))
            return

        def capped(status: int, body: bytes) -> None:
            caps.leave(name, "decisions")
            left(status, body)

        self._decide(request, who, capped, large=large)

    def _decide(self, request: deciding.Request, who: access.Principal, reply: Reply, large: bool = False) -> None:
        try:
            who.runtime_only("asking decisions")
        except errors.Forbidden as exc:
            reply(*_refusal(exc))
            return

        def authorize(tenant: str | None) -> None:
            if tenant is not None and tenant != who.tenant:  # answered as an unknown instance
                raise deciding.Unseen(f"instance {request.instance!r} is not one of tenant {who.tenant!r}")
            if tenant is not None and not who.may_act_on(tenant, request.instance):
                raise errors.Forbidden(f"token {who.name!r} may not ask decisions for instance {request.instance!r}")

        def decided(decision: deciding.Decision | None, error: BaseException | None) -> None:
            if decision is not None:
                self.counters.decisions.inc(decision.decision)
                reply(200, encode(decision))
            else:
                reply(*_failed(error))

        try:
            if not large and self.decider.decide_soon(request, authorize, asyncio.get_running_loop(), decided):
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
