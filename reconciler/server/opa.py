"""What OPA and its sidecars see: the bundle, OPA's Data API, and decision-log uploads.

- ``GET /v1/bundles/arm.tar.gz``: the token's tenant's bundle of the applied commit, signed in
  OPA's format when the server has a key (``ETag``: its revision and key; a sidecar polling the
  revision it has gets 304 without the bundle being built).
- ``GET|POST /v1/data[/{path}]``: OPA's Data API, read-only, evaluated on the tenant's bundle:
  the answer that tenant's sidecars give. Writes are refused: policy changes through Git.
- ``POST /logs``: OPA decision-log uploads (gzipped JSON arrays), kept as op events.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import asyncio
import json
import zlib
from typing import Annotated, Any

import fastapi
from fastapi import responses

from reconciler import errors
from reconciler.decisions import bundling, events
from reconciler.evidence import keys
from reconciler.policy import inputs as policy_inputs
from reconciler.server import auth, bodies, decisions, services
from reconciler.state import database, fleetstate

__all__ = ["MAX_LOG_BYTES", "MAX_LOG_ENTRIES", "router"]

router = fastapi.APIRouter()

#: Largest decision-log upload accepted once inflated (``bodies.LIMITS`` bounds it compressed).
MAX_LOG_BYTES = 4 * 1024 * 1024

#: Most entries one decision-log upload may hold (OPA's default upload, 32 KiB gzipped, holds
#: a few hundred); each is an op event written in one transaction.
MAX_LOG_ENTRIES = 1000

#: Entries stored per transaction (~5 ms of SQLite's write lock each).
LOG_CHUNK = 100


def _bundle_etag(state: dict[str, Any], tenant: str, signer: keys.Signer | None) -> str:
    """The applied revision, the state generation (it moves when a version's integrity fails or
    is restored, which changes the bundle's data), the tenant and the signing key."""
    tag = f"{state.get('applied_sha')}:{state.get('generation')}:{tenant}"
    return f'"{tag}:{signer.kid}"' if signer is not None else f'"{tag}"'


@router.get("/v1/bundles/arm.tar.gz")
def opa_bundle(
    request: fastapi.Request, who: auth.Who, if_none_match: Annotated[str | None, fastapi.Header()] = None
) -> fastapi.Response:
    served = services.of(request)
    with database.reading(served.db) as connection:
        # A sidecar polling the revision it has gets its 304 without the bundle being built.
        state = fleetstate.read(connection) or {}
        if if_none_match == _bundle_etag(state, who.tenant, served.signer):
            return fastapi.Response(status_code=304, headers={"ETag": if_none_match})
        data, _ = bundling.bundle(connection, who.tenant, served.signer)
    etag = _bundle_etag(state, who.tenant, served.signer)
    return fastapi.Response(data, media_type="application/gzip", headers={"ETag": etag})


def _query_tenant(served: services.Services, tenant: str, path: list[str], given: Any | None) -> dict[str, Any]:
    with database.reading(served.db) as connection:
        engine = served.tenant_engines.engine(connection, tenant)
    return engine.query(path, given)


@router.get("/v1/data/{path:path}")
@router.post("/v1/data/{path:path}")
async def opa_data(path: str, request: fastapi.Request, who: auth.Who) -> responses.JSONResponse:
    """OPA's Data API, read-only: the document at ``data.<path>`` for the body's ``input`` (GET:
    the ``input`` query parameter; none: no input), evaluated on the token's tenant's bundle —
    the answer that tenant's OPA sidecars give. ``{"result": ...}``, or ``{}`` when the
    document is undefined. The body is read as JSON whatever its Content-Type, as OPA reads it."""
    given, refused = await _data_input(request)
    if refused is not None:
        return refused
    answer = await asyncio.to_thread(_query_tenant, services.of(request), who.tenant, path.split("/"), given)
    return responses.JSONResponse(answer)


@router.get("/v1/data")
@router.post("/v1/data")
async def opa_data_root(request: fastapi.Request, who: auth.Who) -> responses.JSONResponse:
    """OPA's Data API for the whole data document (as ``/v1/data/``)."""
    return await opa_data("", request, who)


@router.api_route("/v1/data", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/v1/data/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/v1/policies/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
def opa_writes() -> responses.JSONResponse:
    return responses.JSONResponse(
        {"code": "method_not_allowed", "message": "policy and data change only through Git: commit to the fleet repository"},
        status_code=405,
    )


@router.post("/logs", status_code=204)
async def opa_decision_logs(request: fastapi.Request, who: auth.Who) -> fastapi.Response:
    """OPA decision-log uploads (gzipped JSON arrays), kept as op events of the token's tenant;
    a sidecar's runtime token sends them, as it sends every other event. The gate
    (``server.guarding``) bounded the body at 1 MiB; inflated it may be :data:`MAX_LOG_BYTES`
    and hold :data:`MAX_LOG_ENTRIES` entries. The work (inflating, parsing, redacting, storing)
    runs in a worker thread, one upload at a time per process, so it never holds up decisions."""
    who.runtime_only("sending decision logs")
    raw = await request.body()
    gzipped = request.headers.get("content-encoding") == "gzip" or raw[:2] == b"\x1f\x8b"
    served = services.of(request)
    async with served.ingesting:
        stored = await asyncio.to_thread(_ingest, served, who.tenant, raw, gzipped)
    return fastapi.Response(status_code=204, headers={"X-ARM-Stored": str(stored)})


def _inflate(raw: bytes) -> bytes:
    """A gzip member, whole: truncated, trailing bytes or past :data:`MAX_LOG_BYTES` are refused."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(raw, MAX_LOG_BYTES)
    except zlib.error as exc:
        raise errors.ConfigError(f"decision logs are not valid gzip: {exc}") from exc
    if inflater.unconsumed_tail:
        raise errors.ConfigError(f"decision logs inflate above {MAX_LOG_BYTES} bytes")
    if not inflater.eof:
        raise errors.ConfigError("decision logs are not valid gzip: the stream is truncated")
    if inflater.unused_data:
        raise errors.ConfigError(f"decision logs are not valid gzip: {len(inflater.unused_data)} bytes follow the stream")
    return inflated


def _ingest(served: services.Services, tenant: str, raw: bytes, gzipped: bool) -> int:
    if gzipped:
        raw = _inflate(raw)
    elif len(raw) > MAX_LOG_BYTES:
        raise errors.ConfigError(f"decision-log upload above {MAX_LOG_BYTES} bytes")
    try:
        entries = bodies.parse(raw)
    except bodies.Invalid as exc:
        raise errors.ConfigError(f"decision logs: {exc.message}") from None
    if not isinstance(entries, list):
        raise errors.ConfigError("decision logs must be a JSON array")
    if len(entries) > MAX_LOG_ENTRIES:
        raise errors.ConfigError(
            f"a decision-log upload holds {len(entries)} entries; at most {MAX_LOG_ENTRIES} "
            "(OPA: lower decision_logs.reporting.upload_size_limit_bytes)"
        )
    # In transactions of LOG_CHUNK entries: decisions commit between them, never waiting for a
    # whole upload. A failure part-way leaves the chunks before it stored (OPA's retry stores
    # them again: op events, not the audit chain).
    now, stored = served.clock.now(), 0
    for start in range(0, len(entries), LOG_CHUNK):
        with database.transaction(served.db) as connection:
            stored += events.record_decision_logs(connection, tenant, entries[start : start + LOG_CHUNK], now)
    return stored


def _number_problem(raw: bytes, wrapped: bool) -> str | None:
    """The message naming a number no engine reads alike (NaN, 1e400, past 2^53), if that is why
    the document was refused (``wrapped``: it is ``{"input": ...}``)."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if wrapped:
        document = document.get("input") if isinstance(document, dict) else None
    found = policy_inputs.number_problem(document, "input")
    return found[1] if found is not None else None


async def _data_input(request: fastapi.Request) -> tuple[Any | None, responses.JSONResponse | None]:
    """(the ``input`` of a Data API request, None), or (None, the answer OPA gives a request it
    refuses). A missing or null input is None: no input, as OPA takes it."""
    if request.method == "GET":
        text = request.query_params.get("input")
        raw = b"" if text is None else text.encode()
        where = "the input parameter"
    else:
        raw, where = b"", "the body"
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > decisions.MAX_BODY:
                message = f"the request body is larger than {decisions.MAX_BODY} bytes"
                return None, responses.JSONResponse({"code": "invalid_parameter", "message": message}, status_code=413)
    if not raw.strip():
        return None, None
    try:
        document = bodies.parse(raw)
    except bodies.Invalid as exc:
        message = f"{where} is not a JSON document we read: {exc.message}"
        named = _number_problem(raw, request.method != "GET")
        return None, responses.JSONResponse(
            {"code": "invalid_parameter", "message": named or message},
            status_code=400,
        )
    if request.method != "GET":
        if not isinstance(document, dict):
            message = 'the body must be a JSON object: {"input": ...}'
            return None, responses.JSONResponse({"code": "invalid_parameter", "message": message}, status_code=400)
        document = document.get("input")
    # NaN, Infinity, 1e400 and integers past 2^53 are refused naming the field, never passed on as null.
    found = policy_inputs.number_problem(document, "input")
    if found is not None:
        return None, responses.JSONResponse({"code": "invalid_parameter", "message": found[1]}, status_code=400)
    return document, None
