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
from reconciler.server import auth, decisions, services
from reconciler.state import database, fleetstate

__all__ = ["MAX_LOG_BYTES", "router"]

router = fastapi.APIRouter()

#: Largest decision-log upload accepted, compressed or inflated.
MAX_LOG_BYTES = 16 * 1024 * 1024


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


@router.post("/logs")
async def opa_decision_logs(request: fastapi.Request, who: auth.Who) -> fastapi.Response:
    """OPA decision-log uploads (gzipped JSON arrays), kept as op events of the token's tenant;
    a sidecar's runtime token sends them, as it sends every other event."""
    who.runtime_only("sending decision logs")
    raw = await request.body()
    if len(raw) > MAX_LOG_BYTES:
        raise errors.ConfigError(f"decision-log upload above {MAX_LOG_BYTES} bytes")
    if request.headers.get("content-encoding") == "gzip" or raw[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, MAX_LOG_BYTES)
        except zlib.error as exc:
            raise errors.ConfigError(f"decision logs are not valid gzip: {exc}") from exc
        if inflater.unconsumed_tail:
            raise errors.ConfigError(f"decision logs inflate above {MAX_LOG_BYTES} bytes")
    try:
        entries = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"decision logs must be a JSON array: {exc}") from exc
    if not isinstance(entries, list):
        raise errors.ConfigError("decision logs must be a JSON array")
    served = services.of(request)
    with database.transaction(served.db) as connection:
        events.record_decision_logs(connection, who.tenant, entries, served.clock.now())
    return fastapi.Response(status_code=204)


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
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        message = f"{where} is not a JSON document: {exc}"
        return None, responses.JSONResponse({"code": "invalid_parameter", "message": message}, status_code=400)
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
