"""OPA's bundle-signing format: the ``.signatures.json`` a signed bundle carries.

OPA verifies a bundle when its configuration names a key (``bundles.<name>.signing.keyid`` and
``keys.<id>``): the bundle must hold ``.signatures.json`` = ``{"signatures": [JWT]}`` with
exactly one JWS in compact serialisation whose protected header names the algorithm and the key
(``{"alg": "EdDSA", "kid": ...}``) and whose payload lists every other file of the bundle:
``{"files": [{"name", "hash", "algorithm": "SHA-256"}, ...], "scope": ..., "iss": ...}``. OPA
refuses the bundle if the signature does not verify with the configured key, if ``scope`` is not
the configured scope, if a file of the bundle is not listed, if a listed file is missing, or if a
hash differs.

How OPA hashes a file (``bundle/hash.go``): ``data.json`` and ``.manifest`` are structured: the
hash is over the JSON value walked with object keys sorted — ``{``, each ``"key":value`` joined
by ``,``, ``}``; arrays ``[`` ... ``]``; strings and numbers as Go's JSON encoder writes them
without HTML escaping (numbers exactly as written in the file, ``\\u2028``/``\\u2029``
escaped) — so the signature does not depend on whitespace or key order; every other file (the
Rego modules) is hashed as its bytes. Hashes are lowercase hex.

Used by ``decisions.bundling`` to sign the bundle it serves; the keys are ``evidence.keys``'.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from reconciler.evidence import keys as keys_

__all__ = ["SIGNATURES_FILE", "file_hash", "signatures"]

SIGNATURES_FILE = ".signatures.json"
#: Files OPA hashes as JSON values rather than bytes.
_STRUCTURED = frozenset({"data.json", "data.yaml", ".manifest"})
#: Who signed, in the payload's ``iss`` claim.
ISSUER = "arm-reconciler"


class _Number(str):
    """A JSON number as written in the file (OPA decodes numbers as ``json.Number``)."""


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _primitive(value: Any) -> str:
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        # Go writes invalid UTF-8 (a lone surrogate decoded from an escape) as U+FFFD, and
        # escapes the line and paragraph separators even with HTML escaping off.
        text = json.dumps(_SURROGATE.sub("\ufffd", value), ensure_ascii=False)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return json.dumps(value)  # true, false, null


def _walk(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if index:
                out.append(",")
            out.append(_primitive(key))
            out.append(":")
            _walk(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _walk(item, out)
        out.append("]")
    else:
        out.append(_primitive(value))


def file_hash(name: str, data: bytes) -> str:
    """The SHA-256 (hex) OPA computes for the bundle file ``name`` holding ``data``."""
    if name.rsplit("/", 1)[-1] not in _STRUCTURED:
        return hashlib.sha256(data).hexdigest()
    value = json.loads(data, parse_int=_Number, parse_float=_Number, parse_constant=_Number)
    out: list[str] = []
    _walk(value, out)
    return hashlib.sha256("".join(out).encode()).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signatures(files: Mapping[str, bytes], signer: keys_.Signer, scope: str | None = None) -> bytes:
    """The ``.signatures.json`` of a bundle of ``files`` (name → bytes; names as in the tar,
    without a leading ``/``), signed by ``signer``; ``scope``, when given, must match the scope
    the sidecars configure (``bundles.<name>.signing.scope``)."""
    payload: dict[str, Any] = {
        "files": [{"name": name, "hash": file_hash(name, data), "algorithm": "SHA-256"} for name, data in sorted(files.items())],
        "iss": ISSUER,
        "keyid": signer.kid,  # OPA's deprecated claim, kept as OPA's own signer writes it
    }
    if scope is not None:
        payload["scope"] = scope
    header = {"alg": keys_.ALGORITHM, "kid": signer.kid}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    )
    token = signing_input + "." + _b64url(signer.sign(signing_input.encode()))
    return json.dumps({"signatures": [token]}, indent=1).encode() + b"\n"
