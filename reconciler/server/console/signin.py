"""Signing in and out of the console, and its two static files.

``GET /ui/login`` shows the form; ``POST /ui/login`` takes an operator token (``armctl token
create --kind operator``), resolves it as the API resolves a bearer token and, for an operator
token that works, opens a session (``sessions``) and sets its cookie; any other token is refused
on the form, saying why, and nothing is kept. ``POST /ui/logout`` ends the session.
"""

from __future__ import annotations

from typing import Annotated

import fastapi
from fastapi import responses

from reconciler.server import services
from reconciler.server.console import sessions as sessions_
from reconciler.server.console import web

__all__ = ["router"]

router = fastapi.APIRouter(include_in_schema=False)

_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


def _cookie(response: responses.Response, request: fastapi.Request, session: sessions_.Session | None) -> None:
    secure = request.url.scheme == "https"
    if session is None:
        response.delete_cookie(sessions_.COOKIE, path="/ui", secure=secure, httponly=True, samesite="strict")
    else:
        response.set_cookie(
            sessions_.COOKIE, session.id, max_age=int(web.sessions_of(request).lifetime), path="/ui",
            secure=secure, httponly=True, samesite="strict",
        )  # fmt: skip


def _next(raw: str | None) -> str:
    """Where to go after signing in: a console page of this site only."""
    return raw if raw and raw.startswith("/ui/") and not raw.startswith("//") and "\\" not in raw else "/ui/"


@router.get("/ui/login")
def login_form(request: fastapi.Request, next: str | None = None) -> responses.HTMLResponse:
    return web.page(request, "login.html", None, title="Sign in", next=_next(next), problem=None)


@router.post("/ui/login")
async def login(request: fastapi.Request) -> responses.Response:
    form = await web.read_form(request, None)
    token, goto = form.get("token", "").strip(), _next(form.get("next"))
    who = await services.of(request).tokens.lookup("Bearer " + token) if token else "paste an operator token"
    if isinstance(who, str):
        problem: str | None = who
    elif who.kind != "operator" or who.operator is None:
        problem = (
            f"token {who.name!r} is a {who.kind} token; the console needs an operator token (armctl token create --kind operator)"
        )
    else:
        problem = None
    if problem is not None:
        return web.page(request, "login.html", None, http_status=401, title="Sign in", next=goto, problem=problem)
    session = web.sessions_of(request).open(token)
    response = web.redirect(goto)
    _cookie(response, request, session)
    return response


@router.post("/ui/logout")
async def logout(request: fastapi.Request, you: Annotated[web.Viewer, fastapi.Depends(web.viewer)]) -> responses.Response:
    await web.read_form(request, you)
    web.sessions_of(request).close(you.session.id)
    response = web.redirect("/ui/login")
    _cookie(response, request, None)
    return response


@router.get("/ui/static/{name}")
def static(name: str) -> responses.Response:
    if name not in _STATIC:
        return responses.Response("not found", status_code=404, media_type="text/plain")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}
    return responses.Response((web.HERE / "static" / name).read_bytes(), media_type=_STATIC[name], headers=headers)
