"""The web console at ``/ui/``: what operators look at and act on, in a browser.

Server-rendered pages (Jinja2 templates, the project's own stylesheet and one small script, no
front-end library), served by ``armctl serve`` and ``armctl run`` from the same application as
the API (``server.app`` calls :func:`mount`). An operator signs in with an operator token, which
is exchanged for a session cookie (``sessions``); pages (``fleet``, ``acting``, ``records``) read
and act through the very functions the API's routers call, limited to the token's tenant and
checked against the operator's roles as the API checks them (``web``).
"""

from __future__ import annotations

import fastapi
from fastapi import responses
from starlette import requests

from reconciler import errors
from reconciler.server.console import acting, fleet, records, signin, web
from reconciler.server.console import sessions as sessions_

__all__ = ["is_console", "mount"]


def mount(app: fastapi.FastAPI, sessions: sessions_.Sessions | None = None) -> list[fastapi.APIRouter]:
    """Add the console's routes to ``app``; the routers added."""
    app.state.console_sessions = sessions or sessions_.Sessions()
    routers = [signin.router, fleet.router, acting.router, records.router]
    for router in routers:
        app.include_router(router)

    @app.get("/ui/{rest:path}", include_in_schema=False)
    def _no_such_page(rest: str) -> None:
        raise errors.NotFound(f"the console has no page /ui/{rest}")

    return routers


def is_console(path: str) -> bool:
    """Whether ``path`` is the console's: its errors are pages, not JSON."""
    return path == "/ui" or path.startswith("/ui/")


def error_page(request: requests.Request, exc: errors.ArmError) -> responses.Response:
    """An error raised under ``/ui/`` as a page (``server.app`` maps every ``ArmError`` here)."""
    return web.error_page(request, exc)
