"""The gate every request but ``POST /v1/decisions`` passes before FastAPI sees it.

In this order, as plain ASGI (``app`` puts it outside FastAPI's own stack):

1. **Bound** — a declared ``Content-Length`` above the route's limit (``bodies.limit_of``) is
   answered 413 before a byte of the body is read, and the connection closed.
2. **Authenticate** — every ``/v1`` route but the Git webhook (which a signature authenticates)
   and OPA's ``/logs`` need a bearer token: without a usable one the answer is 401, the body
   unread. The principal found is kept in the scope for ``auth.Who``.
3. **Cap** — a token may have :data:`PER_TOKEN` requests in flight at once (the decision route
   keeps its own, larger count in the same :class:`Caps`); one more is answered 429 with
   ``Retry-After``, so one caller cannot take every worker thread and database turn.
4. **Read** — the body, at most the route's limit (413 past it) and within
   :data:`BODY_SECONDS` (408), then **parse** it when the route takes JSON: ``bodies.parse``
   refuses what would hurt the server (422), so FastAPI's own parsing only ever sees a safe
   document. A JSON route takes its body as JSON whatever its ``Content-Type`` says.

Errors take the API's one shape (``bodies.error``). Works with ``server.auth`` (the token cache),
``server.bodies`` (limits and parsing) and ``server.app``, which installs it.
"""

from __future__ import annotations

import asyncio
import collections
import html
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from reconciler.oversight import access
from reconciler.server import bodies

__all__ = ["BODY_SECONDS", "PER_TOKEN", "PER_TOKEN_DECISIONS", "PER_TOKEN_LARGE_DECISIONS", "Caps", "Guard", "reply"]

#: Requests one token may have in flight on the routes this gate guards.
PER_TOKEN = 8

#: Decisions one token may have in flight (a runtime's many agents share a token).
PER_TOKEN_DECISIONS = 256

#: Of those, decisions whose body is large (over ``server.decisions.LARGE_BODY``) at once.
PER_TOKEN_LARGE_DECISIONS = 2

#: How long a request's body may take to arrive once its headers have.
BODY_SECONDS = 30.0

#: Routes whose body is JSON: parsed here, whatever the Content-Type.
#: (The Data API parses its own, answering as OPA does; /logs and evaluations read theirs too.)
_JSON_ROUTES = re.compile(r"/v1/(events|approvals/[^/]+/decision|instances/[^/]+/controls|tenants/[^/]+/controls)")

#: Routes that need no bearer token here: the webhook is signed, /logs authenticates in its handler
#: too (OPA's sidecars send the token); the rest are not under /v1.
_UNAUTHENTICATED = ("/v1/webhooks/git",)

SCOPE_PRINCIPAL = "arm.principal"


class Caps:
    """Requests in flight per token; ``enter`` is False when the token is at its cap."""

    def __init__(self) -> None:
        self._inflight: collections.Counter[tuple[str, str]] = collections.Counter()

    def enter(self, token: str, kind: str, cap: int) -> bool:
        key = (token, kind)
        if self._inflight[key] >= cap:
            return False
        self._inflight[key] += 1
        return True

    def leave(self, token: str, kind: str) -> None:
        key = (token, kind)
        self._inflight[key] -= 1
        if self._inflight[key] <= 0:
            del self._inflight[key]


async def reply(
    send: Callable[[Any], Awaitable[None]], status: int, body: dict[str, Any], close: bool = False, page: bool = False
) -> None:
    """Answer a refusal: the one JSON error shape, or (``page``: a console path, asked by a browser)
    the same message as a minimal HTML page under the console's strictest policy."""
    if page:
        message = html.escape(str(body.get("message", "")))
        data = (
            f"<!doctype html><html lang=en><meta charset=utf-8><title>Refused ({status})</title>"
            f"<h1>Request refused ({status})</h1><p>{message}</p><p><a href=/ui/>Back to the console</a></p></html>"
        ).encode()
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-security-policy", b"default-src 'none'")]
    else:
        data = orjson.dumps(body)
        headers = [(b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(data)).encode()))
    if status == 429:
        headers.append((b"retry-after", b"1"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any], close: bool = False) -> None:
        super().__init__(body["message"])
        self.status = status
        self.body = body
        self.close = close


class Guard:
    """The ASGI gate; see the module docstring. ``count(route, status)`` counts its refusals."""

    def __init__(
        self,
        app: Any,
        lookup: Callable[[str | None], Awaitable[access.Principal | str]],
        caps: Caps,
        count: Callable[[str, int], None],
    ) -> None:
        self.app = app
        self.lookup = lookup
        self.caps = caps
        self.count = count

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        token = ""
        try:
            limit = bodies.limit_of(path)
            declared = _header(scope, b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise _Refused(413, bodies.error("TooLarge", f"the request body is larger than {limit} bytes"), close=True)
            if (path.startswith("/v1/") and path not in _UNAUTHENTICATED) or path == "/logs":
                authorization = _header(scope, b"authorization")
                who = await self.lookup(authorization)
                if isinstance(who, str):
                    raise _Refused(401, bodies.error("Unauthenticated", who))
                scope.setdefault("state", {})[SCOPE_PRINCIPAL] = who
                if not self.caps.enter(who.name, "requests", PER_TOKEN):
                    raise _Refused(
                        429, bodies.error("TooManyRequests", f"token {who.name!r} has {PER_TOKEN} requests in flight: retry")
                    )
                token = who.name
            raw = await self._body(receive, limit)
            if raw and _JSON_ROUTES.fullmatch(path) and scope["method"] == "POST":
                try:
                    bodies.parse(raw)
                except bodies.Invalid as exc:
                    raise _Refused(422, bodies.error("ValidationError", exc.message, exc.problems())) from None
                _json_content_type(scope)
        except _Refused as refused:
            if token:
                self.caps.leave(token, "requests")
            self.count(path, refused.status)
            await reply(send, refused.status, refused.body, refused.close, page=path == "/ui" or path.startswith("/ui/"))
            return
        try:
            await self.app(scope, _replay(raw, receive), send)
        finally:
            if token:
                self.caps.leave(token, "requests")

    async def _body(self, receive: Any, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_SECONDS):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Refused(400, bodies.error("Disconnected", "the client went away"), close=True)
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(
                            413, bodies.error("TooLarge", f"the request body is larger than {limit} bytes"), close=True
                        )
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(
                408, bodies.error("Timeout", f"the request body did not arrive within {BODY_SECONDS:g} s"), close=True
            ) from None


def _header(scope: Any, name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == name), None)


def _json_content_type(scope: Any) -> None:
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    scope["headers"] = headers


def _replay(raw: bytes, receive: Any) -> Callable[[], Awaitable[Any]]:
    """A ``receive`` that hands the application the body read here, then waits for a disconnect."""
    sent = False

    async def replayed() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed
