"""Evidence over HTTP: evaluation runs and version scorecards.

``POST /v1/evaluations`` records a run (``evidence.recording.submit``) for a ``ci`` token of the
tenant (within its templates) or an operator token whose operator holds ``evaluations:submit``;
``GET /v1/evaluations`` lists runs; ``GET /v1/versions`` and ``GET /v1/versions/{name}`` are the
scorecards (``evidence.scorecards``), as ``armctl version list | show`` print them;
``GET /v1/versions/{name}/card`` is the version's agent card (``evidence.cards``), signed with the
server's key, whose public half ``GET /v1/keys`` publishes. The submit
route authenticates the caller before it reads the body, bounds the body before reading it whole,
and only then parses it.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import asyncio
from typing import Annotated, Any

import fastapi
import pydantic
from fastapi import responses

from reconciler import errors
from reconciler.evidence import cards, recording, scorecards
from reconciler.server import auth, bodies, decisions, services
from reconciler.state import database

__all__ = ["EvaluationBody", "router"]

router = fastapi.APIRouter()

Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253)]


class EvaluationBody(pydantic.BaseModel):
    """A run to record: the version measured, the suite, each of its metrics, the sample count."""

    model_config = pydantic.ConfigDict(extra="forbid")
    version: Name
    suite: Name
    metrics: dict[Annotated[str, pydantic.StringConstraints(max_length=128)], Any]
    samples: Any
    runUrl: str | None = None
    details: dict[str, Any] | None = None
    #: the genome the harness evaluated; refused (409) when it is not the version's
    genomeHash: str | None = None


def _too_large() -> responses.JSONResponse:
    return responses.JSONResponse(
        bodies.error("TooLarge", f"the request body is larger than {decisions.MAX_BODY} bytes"), status_code=413
    )


async def _bounded_body(request: fastapi.Request) -> bytes | None:
    """The request body, or None once it passes ``decisions.MAX_BODY`` (then no more is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > decisions.MAX_BODY:
        return None
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > decisions.MAX_BODY:
            return None
    return bytes(raw)


def _invalid(problems: list[dict[str, Any]]) -> responses.JSONResponse:
    where = ".".join(str(part) for part in problems[0]["loc"])
    message = f"{where}: {problems[0]['msg']}"
    return responses.JSONResponse(bodies.error("ValidationError", message, problems), status_code=422)


@router.post(
    "/v1/evaluations",
    status_code=201,
    response_model=None,
    # The handler reads the body itself (after authenticating, bounded): declared here for the document.
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": EvaluationBody.model_json_schema()}}}
    },
)
async def submit_evaluation(request: fastapi.Request, who: auth.Who) -> Any:
    """Record an evaluation run: ``{version, suite, metrics: {name: value}, samples, runUrl?,
    details?, genomeHash?}``. 201 with the run and what the version's runs of the suite amount
    to now; 403 for a token that may not submit; 404 for an unknown version or suite; 409 when
    ``genomeHash`` is not the version's; 413 past 1 MiB; 422 for metrics the suite does not
    declare, or a rate outside 0..1."""
    submitter = recording.Submitter.of(who)
    raw = await _bounded_body(request)
    if raw is None:
        return _too_large()
    try:
        data = bodies.parse(raw)
    except bodies.Invalid as exc:
        return _invalid(exc.problems())
    try:
        body = EvaluationBody.model_validate(data)
    except pydantic.ValidationError as exc:
        return _invalid([bodies.problem(e["type"], ["body", *e["loc"]], e["msg"]) for e in exc.errors(include_url=False)])
    served = services.of(request)

    def record() -> recording.Recorded:
        with database.transaction(served.db) as connection:
            return recording.submit(
                connection,
                who.tenant,
                submitter,
                version=body.version,
                suite=body.suite,
                metrics=body.metrics,
                samples=body.samples,
                run_url=body.runUrl,
                details=body.details,
                genome_hash=body.genomeHash,
                now=served.clock.now(),
            )

    recorded = await asyncio.to_thread(record)
    if recorded.restricted:
        served.decider.invalidate()  # the very next decision sees the held instances
    return responses.JSONResponse(_recorded(recorded), status_code=201)


def _recorded(recorded: recording.Recorded) -> dict[str, Any]:
    return {
        "run": recorded.run,
        "evidence": recorded.verdict.as_dict(),
        "deployed": recorded.deployed,
        "restricted": [{"instance": c.instance, "before": c.before, "after": c.after} for c in recorded.restricted],
        "unrestricted": [{"instance": c.instance, "state": c.before} for c in recorded.left],
    }


@router.get("/v1/evaluations")
def list_evaluations(
    request: fastapi.Request, who: auth.Who, version: str | None = None, suite: str | None = None
) -> list[dict[str, Any]]:
    """Runs of the token's tenant (a ci token limited to templates: of those), oldest first."""
    with database.reading(services.of(request).db) as connection:
        return recording.list_runs(connection, tenant=who.tenant, version=version, suite=suite, templates=who.templates)


@router.get("/v1/versions")
def list_versions(request: fastapi.Request, who: auth.Who, template: str | None = None) -> list[dict[str, Any]]:
    """Every version of the token's tenant: template, lifecycle, genome hash, where it runs, what it waits for."""
    with database.reading(services.of(request).db) as connection:
        rows = scorecards.versions(connection, tenant=who.tenant, template=template)
    return [r for r in rows if who.templates is None or r["template"] in who.templates]


@router.get("/v1/versions/{name}")
def show_version(request: fastapi.Request, name: str, who: auth.Who) -> dict[str, Any]:
    """One version's scorecard: lineage, evidence per suite, approvals, deployments, integrity
    (its genome re-hashed now)."""
    served = services.of(request)
    card = scorecards.show(served.db, who.tenant, name, served.clock.now())
    if who.templates is not None and card["template"] not in who.templates:
        raise errors.NotFound(f"version {name!r} does not exist for the templates of token {who.name!r}")
    return card


@router.get("/v1/versions/{name}/card")
def version_card(request: fastapi.Request, name: str, who: auth.Who) -> dict[str, Any]:
    """The version's agent card: A2A AgentCard shape (name, version, description, skills from the
    tool grants) with the ARM facts (genomeHash, lifecycle, integrity re-hashed now, evaluation,
    approvals, envelope), signed (``signatures``: JWS, EdDSA, the key ``GET /v1/keys`` lists)."""
    served = services.of(request)
    if served.signer is None:
        raise cards.not_signing()
    card = cards.card(served.db, who.tenant, name, served.clock.now())
    if who.templates is not None and card["template"] not in who.templates:
        raise errors.NotFound(f"version {name!r} does not exist for the templates of token {who.name!r}")
    return cards.sign(card, served.signer)
