"""The console's pages of what runs: the fleet overview, versions, deployments and instances.

Each reads through the functions the API and the CLI read through — ``reconcile.reporting``
(status, instances, deployments), ``evidence.scorecards`` (versions and their scorecards),
``state.opevents`` (decisions per minute) — limited to the signed-in operator's tenant, one page
of :data:`web.PAGE_SIZE` rows at a time.
"""

from __future__ import annotations

import datetime as dt

import fastapi
from fastapi import responses

from reconciler import errors
from reconciler.evidence import scorecards
from reconciler.oversight import holds
from reconciler.reconcile import reporting
from reconciler.server import services
from reconciler.server.console import web
from reconciler.state import database, opevents

__all__ = ["router"]

router = fastapi.APIRouter(include_in_schema=False)

#: How far back the overview counts decisions, a row per minute.
MINUTES = 15

#: Versions and deployments whose conditions the overview lists (the rest: counted, and on their pages).
CONDITIONS = 20

#: Instance states an operator filters by.
STATES = ("PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED")


@router.get("/ui")
def root() -> responses.RedirectResponse:
    return web.redirect("/ui/")


@router.get("/ui/")
def overview(request: fastapi.Request, you: web.You) -> responses.HTMLResponse:
    served = services.of(request)
    now = served.clock.now()
    since = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=MINUTES - 1)
    with database.reading(served.db) as connection:
        report = reporting.status(connection, runs=3, tenant=you.tenant, first_conditions=CONDITIONS)
        by_environment = reporting.instances_by_environment(connection, you.tenant)
        counted, complete_from = opevents.decisions_per_minute(connection, you.tenant, since)
    minutes = [since + dt.timedelta(minutes=n) for n in range(MINUTES)]
    per_minute = [(m, counted.get(m, {})) for m in reversed(minutes)]
    peak = max([sum(c.values()) for _, c in per_minute] + [1])
    states = sorted({s for counts in by_environment.values() for s in counts}, key=STATES.index)
    conditions = report["conditions"]
    return web.page(
        request, "overview.html", you, title="Fleet overview", report=report, by_environment=by_environment,
        states=states, per_minute=per_minute, peak=peak,
        waiting=[c for c in conditions if c["type"] == "Waiting"],
        held=[c for c in conditions if c["type"] == "Held"],
        other=[c for c in conditions if c["type"] not in ("Waiting", "Held")],
        policy=served.decider.policy_status(), shown=CONDITIONS, complete_from=complete_from,
        events=opevents.PER_MINUTE_EVENTS,
    )  # fmt: skip


@router.get("/ui/versions")
def versions(
    request: fastapi.Request, you: web.You, page: str | None = None, template: str | None = None
) -> responses.HTMLResponse:
    number = web.page_number(page)
    with database.reading(services.of(request).db) as connection:
        rows = scorecards.versions(
            connection, tenant=you.tenant, template=template or None, limit=web.PAGE_SIZE + 1, offset=(number - 1) * web.PAGE_SIZE
        )
    return web.page(
        request, "versions.html", you, title="Versions", rows=rows[: web.PAGE_SIZE], page=number,
        more=len(rows) > web.PAGE_SIZE, template=template or "",
    )  # fmt: skip


@router.get("/ui/versions/{name}")
def version(request: fastapi.Request, name: str, you: web.You) -> responses.HTMLResponse:
    served = services.of(request)
    card = scorecards.show(served.db, you.tenant, name, served.clock.now())
    return web.page(request, "version.html", you, title=f"Version {name}", card=card)


@router.get("/ui/deployments")
def deployments(request: fastapi.Request, you: web.You, page: str | None = None) -> responses.HTMLResponse:
    number = web.page_number(page)
    with database.reading(services.of(request).db) as connection:
        rows = reporting.deployments(connection, you.tenant, limit=web.PAGE_SIZE + 1, offset=(number - 1) * web.PAGE_SIZE)
    return web.page(
        request, "deployments.html", you, title="Deployments", rows=rows[: web.PAGE_SIZE], page=number,
        more=len(rows) > web.PAGE_SIZE,
    )  # fmt: skip


@router.get("/ui/instances")
def instances(
    request: fastapi.Request, you: web.You, page: str | None = None, environment: str | None = None, state: str | None = None
) -> responses.HTMLResponse:
    number = web.page_number(page)
    state = (state or "").upper() or None
    if state is not None and state not in STATES:
        raise errors.ConfigError(f"state {state!r} is not one of {', '.join(STATES)}")
    with database.reading(services.of(request).db) as connection:
        rows = reporting.instances(
            connection, tenant=you.tenant, environment=environment or None, state=state,
            limit=web.PAGE_SIZE + 1, offset=(number - 1) * web.PAGE_SIZE,
        )  # fmt: skip
    return web.page(
        request, "instances.html", you, title="Instances", rows=rows[: web.PAGE_SIZE], page=number,
        more=len(rows) > web.PAGE_SIZE, environment=environment or "", state=state or "", states=STATES,
        tenant_controls=[c for c in holds.TENANT_CONTROLS if you.can(f"tenants:{c}")],
    )  # fmt: skip


@router.get("/ui/instances/{instance_id}")
def instance(request: fastapi.Request, instance_id: str, you: web.You) -> responses.HTMLResponse:
    with database.reading(services.of(request).db) as connection:
        detail = reporting.instance(connection, instance_id)
    if detail["tenant"] != you.tenant:  # the same answer as for one that does not exist
        raise errors.NotFound(f"instance {instance_id!r} does not exist in tenant {you.tenant!r}")
    controls = [c for c in holds.CONTROLS if you.can(f"instances:{c}")]
    return web.page(request, "instance.html", you, title=f"Instance {instance_id}", detail=detail, controls=controls)
