"""Authentication: a request's bearer token → the principal it stands for (or why none).

Every ``/v1`` route needs a token (``armctl token create``). :class:`Tokens` looks a token up at
most once per :data:`CACHE_SECONDS` (a revocation or expiry takes effect within that time, and a
decision does not wait for a token query); the decision fast path (``server.decisions``) and the
FastAPI routes (through :data:`Who`) share it, so both answer 401 the same way. What a principal
may do is checked where it acts: ``oversight.access`` (runtime or operator, its tenant and
instances) and the operator's roles.
"""

# No `from __future__ import annotations` here: FastAPI reads the dependency's annotations.
import asyncio
from typing import Annotated

import fastapi

from reconciler import clock as clock_
from reconciler import errors
from reconciler.oversight import access
from reconciler.state import database

__all__ = ["CACHE_SECONDS", "CI_ROUTES", "NO_TOKEN", "Tokens", "Who", "bearer", "operator_of"]

#: How long a looked-up API token is trusted before it is looked up again (revocation delay).
CACHE_SECONDS = 1.0
_CACHE_SIZE = 10_000

NO_TOKEN = "missing bearer token: send 'Authorization: Bearer <token>' (armctl token create)"

#: All a ci token may reach: it submits evaluation runs and reads runs and versions. An
#: evaluation pipeline's secret must not open approvals, controls, bundles or decisions.
CI_ROUTES = ("/v1/evaluations", "/v1/versions")


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; empty when there is none."""
    return authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else ""


class Tokens:
    """Tokens looked up in the store, cached briefly."""

    def __init__(self, db: database.Engine, clock: clock_.Clock) -> None:
        self.db = db
        self.clock = clock
        self._known: dict[str, tuple[float, access.Principal | str]] = {}

    def _resolve(self, token: str) -> access.Principal | str:
        with database.reading(self.db) as connection:
            try:
                return access.resolve(connection, token, self.clock.now())
            except errors.Forbidden as exc:
                return str(exc)

    def peek(self, authorization: str | None) -> access.Principal | str | None:
        """What :meth:`lookup` answers when that needs no query, else None."""
        token = bearer(authorization)
        if not token:
            return NO_TOKEN
        cached = self._known.get(token)
        return cached[1] if cached is not None and cached[0] > self.clock.monotonic() else None

    async def lookup(self, authorization: str | None) -> access.Principal | str:
        """The principal of an ``Authorization`` header, or why there is none (a 401 message)."""
        who = self.peek(authorization)
        if who is not None:
            return who
        if len(self._known) >= _CACHE_SIZE:
            self._known.clear()
        token = bearer(authorization)
        resolved = await asyncio.to_thread(self._resolve, token)
        self._known[token] = (self.clock.monotonic() + CACHE_SECONDS, resolved)
        return resolved


async def _principal(request: fastapi.Request, authorization: Annotated[str | None, fastapi.Header()] = None) -> access.Principal:
    # The gate (``server.guarding``) looked the token up before it read the body.
    who = request.scope.get("state", {}).get("arm.principal")
    if who is None:
        who = await request.app.state.services.tokens.lookup(authorization)
    if isinstance(who, str):
        raise errors.Unauthenticated(who)
    path = request.url.path
    if who.kind == "ci" and not any(path == p or path.startswith(p + "/") for p in CI_ROUTES):
        raise errors.Forbidden(f"token {who.name!r} is a ci token: it may submit evaluation runs and read runs and versions only")
    return who  # type: ignore[no-any-return]


#: A route's caller: ``who: auth.Who`` in a handler's parameters.
Who = Annotated[access.Principal, fastapi.Depends(_principal)]


def operator_of(who: access.Principal) -> str:
    """The operator an operator token acts as; ``errors.Forbidden`` for any other token."""
    if who.kind != "operator" or who.operator is None:
        raise errors.Forbidden(f"token {who.name!r} is a {who.kind} token; this needs an operator token")
    return who.operator
