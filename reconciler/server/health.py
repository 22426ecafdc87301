"""Health, readiness, metrics and status: what operators and orchestrators poll; Git webhooks.

``/healthz`` (the process answers), ``/readyz`` (it can decide: schema current, a commit applied,
and with the daemon, its own readiness), ``/metrics`` (Prometheus: every ``reconciler.metrics``
series of the process), ``GET /v1/status`` (the reconcile's status for the token's tenant) and
``POST /v1/webhooks/git`` (a push: the daemon refreshes now). The first three need no token.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
from typing import Any

import fastapi
from fastapi import responses

from reconciler import errors
from reconciler.notifications import outbox
from reconciler.oversight import approving
from reconciler.reconcile import reporting
from reconciler.server import auth, opa, services
from reconciler.state import database, fleetstate

__all__ = ["router"]

router = fastapi.APIRouter()


@router.get("/v1/status")
def status(request: fastapi.Request, who: auth.Who) -> dict[str, Any]:
    served = services.of(request)
    with database.reading(served.db) as connection:
        report = reporting.status(connection, tenant=who.tenant)
    report["policy"] = served.decider.policy_status()
    if served.runner is not None:
        report["daemon"] = served.runner.status()
    return report


@router.post("/v1/webhooks/git", status_code=202)
async def git_webhook(request: fastapi.Request) -> dict[str, Any]:
    """A Git host's push webhook (GitHub: X-Hub-Signature-256; GitLab: X-Gitlab-Token): refresh now."""
    runner = services.of(request).runner
    if runner is None:
        raise errors.NotFound("webhooks need the daemon: run 'armctl run', not 'armctl serve'")
    body = await request.body()
    if len(body) > opa.MAX_LOG_BYTES:
        raise errors.ConfigError(f"webhook body above {opa.MAX_LOG_BYTES} bytes")
    return runner.webhook({k.lower(): v for k, v in request.headers.items()}, body)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: fastapi.Request) -> responses.JSONResponse:
    served = services.of(request)
    if served.runner is not None:
        ready, reason = served.runner.readiness()
        if not ready:
            return responses.JSONResponse({"ready": False, "reason": reason}, status_code=503)
    try:
        database.require_current(served.db)
        with database.reading(served.db) as connection:
            state = fleetstate.read(connection)
    except errors.StoreError as exc:
        return responses.JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
    if not state or not state.get("applied_sha"):
        return responses.JSONResponse({"ready": False, "reason": "no commit has been applied yet"}, status_code=503)
    return responses.JSONResponse({"ready": True, "appliedSha": state["applied_sha"]})


@router.get("/metrics", response_class=responses.PlainTextResponse)
def prometheus(request: fastapi.Request) -> str:
    served = services.of(request)
    lines = [*served.decisions.render(), *served.requests.render()]
    with database.reading(served.db) as connection:
        state = fleetstate.read(connection) or {}
        pending = approving.pending_count(connection)
        unsent = outbox.unsent(connection)
    lines += [
        "# HELP arm_approvals_pending Approval requests waiting for a decision.",
        "# TYPE arm_approvals_pending gauge",
        f"arm_approvals_pending {pending}",
        "# HELP arm_notifications_unsent Notifications waiting for (another) attempt, and given up on (FAILED).",
        "# TYPE arm_notifications_unsent gauge",
        f'arm_notifications_unsent{{status="pending"}} {unsent["PENDING"]}',
        f'arm_notifications_unsent{{status="failed"}} {unsent["FAILED"]}',
        "# HELP arm_applied_revision_info The applied commit.",
        "# TYPE arm_applied_revision_info gauge",
        f'arm_applied_revision_info{{sha="{state.get("applied_sha") or ""}"}} 1',
        *served.decider.write_seconds.render(),
    ]
    if served.runner is not None:
        lines += served.runner.metrics()
    return "\n".join(lines) + "\n"
