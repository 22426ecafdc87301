"""The console's pages of what was recorded: the audit trail and the decisions.

The audit trail is the tenant's change records (``reconcile.reporting.history``, as ``armctl
history`` reads them), filtered by type, object, commit and time, newest first, a page at a time;
it needs ``audit:read``. Its verification status is the tenant's newest signed checkpoint, and
``/ui/audit/verify`` checks the chain now as ``armctl audit verify`` does (``audit.chain.verify``
and ``evidence.checkpoints.verify`` against the published keys), read-only, showing this
tenant's breaks. Decisions are the tenant's stored decisions (``state.opevents.decisions``),
arguments as recorded (redacted), filtered by instance, tool and result.
"""

from __future__ import annotations

import asyncio

import fastapi
from fastapi import responses

from reconciler import clock as clock_
from reconciler import errors
from reconciler.audit import chain
from reconciler.evidence import checkpoints
from reconciler.evidence import keys as keys_
from reconciler.reconcile import reporting
from reconciler.server import services
from reconciler.server.console import web
from reconciler.state import database, opevents

__all__ = ["router"]

router = fastapi.APIRouter(include_in_schema=False)

RESULTS = ("ALLOW", "NEEDS_APPROVAL", "DENY")


def _before(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


def _audit_reader(you: web.Viewer) -> None:
    if not you.can("audit:read"):
        raise errors.Forbidden(f"operator {you.operator!r} lacks permission audit:read in tenant {you.tenant!r}")


@router.get("/ui/audit")
def audit(
    request: fastapi.Request,
    you: web.You,
    type: str | None = None,
    kind: str | None = None,
    name: str | None = None,
    sha: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
) -> responses.HTMLResponse:
    _audit_reader(you)
    filters = {
        "type": type or "",
        "kind": kind or "",
        "name": name or "",
        "sha": sha or "",
        "since": since or "",
        "until": until or "",
    }
    with database.reading(services.of(request).db) as connection:
        rows = reporting.history(
            connection, tenant=you.tenant, type_=type or None, kind=kind or None, name=name or None, sha=sha or None,
            since=clock_.parse_time(since, "field 'since'") if since else None,
            until=clock_.parse_time(until, "field 'until'") if until else None, limit=web.PAGE_SIZE + 1, before_id=_before(before),
        )  # fmt: skip
        latest = checkpoints.latest(connection, you.tenant)
        head = checkpoints.chain_end(connection, you.tenant)
    more = len(rows) > web.PAGE_SIZE
    rows = list(reversed(rows[-web.PAGE_SIZE :]))  # newest first
    return web.page(
        request, "audit.html", you, title="Audit trail", rows=rows, more=more, filters=filters,
        older_id=rows[-1]["id"] if more and rows else None, latest=latest, head=head, verification=None,
    )  # fmt: skip


@router.get("/ui/audit/verify")
async def verify(request: fastapi.Request, you: web.You) -> responses.HTMLResponse:
    _audit_reader(you)
    served = services.of(request)

    def check() -> dict[str, object]:
        with database.reading(served.db) as connection:
            breaks = [str(b) for b in chain.verify(connection) if b.tenant == you.tenant]
            public = keys_.trusted(connection, [served.signer.public] if served.signer is not None else [])
            found, tally = checkpoints.verify(connection, public, None, served.clock.now())
            head = checkpoints.chain_end(connection, you.tenant)
        breaks += [str(b) for b in found if b.tenant == you.tenant]
        mine = tally.get(you.tenant, checkpoints.Tally())
        return {"breaks": breaks, "records": mine.records, "checkpoints": mine.checkpoints, "anchored": mine.anchored,
                "head": head, "at": served.clock.now().isoformat()}  # fmt: skip

    verification = await asyncio.to_thread(check)
    return web.page(request, "verify.html", you, title="Chain verification", verification=verification)


@router.get("/ui/decisions")
def decisions(
    request: fastapi.Request,
    you: web.You,
    instance: str | None = None,
    tool: str | None = None,
    result: str | None = None,
    before: str | None = None,
) -> responses.HTMLResponse:
    result = (result or "").upper() or None
    if result is not None and result not in RESULTS:
        raise errors.ConfigError(f"result {result!r} is not one of {', '.join(RESULTS)}")
    with database.reading(services.of(request).db) as connection:
        rows, following = opevents.decisions(
            connection, you.tenant, instance=instance or None, tool=tool or None, result=result,
            before_id=_before(before), limit=web.PAGE_SIZE,
        )  # fmt: skip
    return web.page(
        request, "decisions.html", you, title="Decisions", rows=rows, older_id=following, searched=opevents.SEARCH_EVENTS,
        filters={"instance": instance or "", "tool": tool or "", "result": result or ""}, results=RESULTS,
    )  # fmt: skip
