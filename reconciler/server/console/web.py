"""What every console page shares: templates, security headers, the signed-in operator, forms.

Pages are Jinja2 templates rendered on the server (``templates/``) with the project's own
stylesheet and one small script (``static/``); every page reads and works without JavaScript.
Every response carries a Content-Security-Policy that allows nothing but this origin's own files
(no inline script or style, no frames, forms posting only here), ``no-store`` caching and
``nosniff``.

:func:`viewer` is each page's dependency: the session cookie → the operator token it holds →
the principal, through the API's own token cache (``server.auth.Tokens``), so a page sees exactly
what that token may see through the API: its tenant, checked by the same ``oversight`` functions.
The operator's permissions (``oversight.access.operator_permissions``) only decide which forms a
page offers; every action is checked again where it is done, as the API does it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import fastapi
import jinja2
from fastapi import responses
from starlette import requests

from reconciler import errors
from reconciler.oversight import access
from reconciler.server import decisions, services
from reconciler.server.console import sessions as sessions_
from reconciler.state import database

__all__ = ["CSP", "Viewer", "You", "error_page", "page", "read_form", "redirect", "viewer"]

HERE = Path(__file__).parent

#: Nothing but this origin's own script, styles and images; forms post only here; no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

#: The largest form body read (a simulator's arguments included).
MAX_FORM_BYTES = 64 * 1024

#: Rows on one page of a list.
PAGE_SIZE = 50

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: str | dt.datetime | None) -> str:
    """A stored time as people read it: ``2026-11-22 12:00:05 UTC``."""
    if value is None:
        return "—"
    at = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at.astimezone(dt.UTC) if at.tzinfo else at
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


_templates.filters["when"] = _when
_templates.filters["short"] = lambda sha: (sha or "")[:12]


@dataclasses.dataclass(frozen=True)
class Viewer:
    """The signed-in operator of a request."""

    who: access.Principal
    session: sessions_.Session
    permissions: frozenset[str]

    @property
    def tenant(self) -> str:
        return self.who.tenant

    @property
    def operator(self) -> str:
        return self.who.operator or ""

    def can(self, permission: str) -> bool:
        """Whether the operator's roles grant ``permission``: only which forms a page offers."""
        return access.allows(self.permissions, permission)


def sessions_of(request: requests.Request) -> sessions_.Sessions:
    found: sessions_.Sessions = request.app.state.console_sessions
    return found


async def viewer(request: requests.Request) -> Viewer:
    """The request's operator; ``errors.Unauthenticated`` (the page sends the browser to the
    sign-in form) when there is no live session or its token no longer works (revoked, expired,
    its operator removed from Git)."""
    session = sessions_of(request).get(request.cookies.get(sessions_.COOKIE))
    if session is None:
        raise errors.Unauthenticated("sign in first")
    served = services.of(request)
    who = await served.tokens.lookup("Bearer " + session.token)
    if isinstance(who, str) or who.kind != "operator" or who.operator is None:
        sessions_of(request).close(session.id)
        raise errors.Unauthenticated(who if isinstance(who, str) else "not an operator token")
    try:
        with database.reading(served.db) as connection:
            permissions = frozenset(access.operator_permissions(connection, who.tenant, who.operator))
    except errors.Forbidden as exc:  # the operator is no longer declared in Git
        sessions_of(request).close(session.id)
        raise errors.Unauthenticated("the operator of this session is no longer declared") from exc
    you = Viewer(who, session, permissions)
    request.state.console_viewer = you  # an error page still shows who is signed in
    return you


#: A page's signed-in operator: ``you: web.You`` in a handler's parameters.
You = Annotated[Viewer, fastapi.Depends(viewer)]


def page(
    request: requests.Request, view: str, you: Viewer | None, http_status: int = 200, **values: Any
) -> responses.HTMLResponse:
    """The template ``view`` rendered with ``values``, with the console's headers."""
    notice = sessions_of(request).take_notice(you.session.id) if you is not None else None
    body = _templates.get_template(view).render(request=request, you=you, notice=notice, **values)
    return responses.HTMLResponse(body, status_code=http_status, headers=HEADERS)


def redirect(location: str) -> responses.RedirectResponse:
    """See other: after a form is handled, the browser reads the page it changed (POST, then GET)."""
    return responses.RedirectResponse(location, status_code=303, headers=HEADERS)


def error_page(request: requests.Request, exc: errors.ArmError) -> responses.Response:
    """An error the project raised, as a page: its status as the API answers it, and why; no
    session (``errors.Unauthenticated``) sends the browser to the sign-in form, and back after."""
    if isinstance(exc, errors.Unauthenticated):
        if request.method != "GET":
            return redirect("/ui/login")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect("/ui/login?" + urllib.parse.urlencode({"next": target}))
    you = getattr(request.state, "console_viewer", None)
    status = decisions.error_status(exc)
    return page(request, "error.html", you, http_status=status, title=type(exc).__name__, message=str(exc))


def same_origin(request: requests.Request) -> bool:
    """Whether a form comes from this site: its ``Origin`` (or, without one, its ``Referer``)
    names this host. Browsers send ``Origin`` with every cross-site POST."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser's cross-site form: those always say where they come from
    parsed = urllib.parse.urlsplit(origin)
    return parsed.netloc == request.headers.get("host", "")


async def read_form(request: requests.Request, you: Viewer | None) -> dict[str, str]:
    """A form's fields (the first value of each), read only after the session was checked, and
    only up to :data:`MAX_FORM_BYTES`; ``errors.Forbidden`` for a cross-site form or a missing or
    wrong CSRF token (``you``: None only for the sign-in form, which has no session yet)."""
    if not same_origin(request):
        raise errors.Forbidden("this form was sent from another site; open the console and send it from there")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise errors.ConfigError(f"a form may hold at most {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise errors.ConfigError(f"a form may hold at most {MAX_FORM_BYTES} bytes")
    try:
        fields = urllib.parse.parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.ConfigError("the form could not be read (send it from the console's page)") from exc
    form = {name: values[0] for name, values in fields.items()}
    if you is not None and not sessions_.csrf_matches(you.session, form.get("csrf")):
        raise errors.Forbidden("the form's CSRF token is missing or stale: reload the page and send it again")
    return form


def page_number(raw: str | None) -> int:
    """``?page=`` as a page number from 1 (anything else is page 1)."""
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


def query_of(request: requests.Request, **changed: Any) -> str:
    """The request's query string with ``changed`` parameters replaced (None: removed)."""
    params = {k: v for k, v in request.query_params.items() if k not in changed}
    params.update({k: str(v) for k, v in changed.items() if v is not None})
    return "?" + urllib.parse.urlencode(params) if params else "?"


_templates.globals["query_of"] = query_of
