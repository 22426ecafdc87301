"""``GET /v1/keys``: the public keys that verify what this service signs.

Every key that signed a chain checkpoint, an audit pack or a bundle is registered in the store
(``evidence.keys.register``), old ones included, so what they signed still verifies after a
rotation; ``current`` is the key this server signs OPA bundles with (its public key is registered
when the server starts). Each key comes as its id, ``EdDSA``, the raw key in base64, PEM (what
OPA's ``keys`` configuration and ``armctl audit verify-pack --key`` take) and JWK. Any valid
token may read them: they are public.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
from typing import Any

import fastapi

from reconciler.evidence import keys
from reconciler.server import auth, services
from reconciler.state import database

__all__ = ["router"]

router = fastapi.APIRouter()


@router.get("/v1/keys")
def public_keys(request: fastapi.Request, who: auth.Who) -> dict[str, Any]:
    served = services.of(request)
    with database.reading(served.db) as connection:
        listed = keys.published(connection)
    current = served.signer.kid if served.signer is not None else None
    if served.signer is not None and all(key["kid"] != current for key in listed):
        listed.append({**served.signer.public.as_dict(), "source": served.signer.source, "createdAt": None})
    return {"current": current, "keys": [{**key, "current": key["kid"] == current} for key in listed]}
