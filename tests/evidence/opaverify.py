"""Verifying a signed OPA bundle the way OPA does, written from OPA's specification rather than
from the project's signer, so the two meet only in the format.

OPA (``bundle/verify.go``, ``bundle/hash.go``, ``bundle/bundle.go``): ``.signatures.json`` holds
exactly one JWS (compact serialisation); the key is the configured ``signing.keyid`` (else the
header's ``kid``), the algorithm the configured key's; the signature is over
``BASE64URL(header) "." BASE64URL(payload)``; the payload's ``scope`` must equal the configured
scope; every file of the bundle but ``.signatures.json`` must be listed, every listed file must
be there, and each hash must match: for ``data.json`` and ``.manifest`` the SHA-256 of the JSON
value as Go's ``json.Marshal`` writes it with sorted keys and without HTML escaping (numbers as
written in the file), for other files the SHA-256 of the bytes. No OPA is run here: none can be
installed on this machine; real OPA loads the example configuration where one is on PATH
(``tests/examples/test_opa_sidecar.py``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["BundleRefused", "file_digest", "go_json", "read_bundle", "verify_bundle"]


class BundleRefused(Exception):
    """What OPA would log when it refuses to activate the bundle."""


class _Literal(str):
    pass


def go_json(value: Any) -> str:
    """``value`` as Go's encoder writes it (json.Marshal, SetEscapeHTML(false)): compact, keys
    sorted, numbers as written, U+2028/U+2029 escaped, other characters as UTF-8."""
    if isinstance(value, _Literal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(go_json(str(k)) + ":" + go_json(v) for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            code = ord(ch)
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch in "\b\f\n\r\t":
                out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
            elif code < 0x20 or code in (0x2028, 0x2029):
                out.append(f"\\u{code:04x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    return json.dumps(value)


def file_digest(name: str, content: bytes) -> str:
    """The SHA-256 OPA compares for a bundle file: of the Go-encoded JSON value for ``data.json``
    and ``.manifest``, of the bytes for the rest."""
    if name.rsplit("/", 1)[-1] in ("data.json", ".manifest"):
        value = json.loads(content, parse_int=_Literal, parse_float=_Literal)
        return hashlib.sha256(go_json(value).encode()).hexdigest()
    return hashlib.sha256(content).hexdigest()


def jws_header(data: bytes) -> dict[str, Any]:
    """The protected header of the bundle's one signature."""
    token = json.loads(read_bundle(data)[".signatures.json"])["signatures"][0]
    header: dict[str, Any] = json.loads(_unb64(token.split(".")[0]))
    return header


def read_bundle(data: bytes) -> dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        for member in tar.getmembers():
            stream = tar.extractfile(member)
            assert stream is not None
            files[member.name.lstrip("/")] = stream.read()
    return files


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_bundle(data: bytes, keys: dict[str, dict[str, str]], keyid: str, scope: str = "") -> dict[str, Any]:
    """Verify the gzipped bundle ``data`` as OPA configured with ``keys`` (OPA's ``keys`` section:
    id → {algorithm, key (PEM)}) and ``bundles.<b>.signing: {keyid, scope}`` does; the payload."""
    files = read_bundle(data)
    if ".signatures.json" not in files:
        raise BundleRefused("bundle missing .signatures.json file")
    tokens = json.loads(files.pop(".signatures.json"))["signatures"]
    if len(tokens) != 1:
        raise BundleRefused(".signatures.json: expected exactly one JWT")
    header_b64, payload_b64, signature_b64 = tokens[0].split(".")
    header = json.loads(_unb64(header_b64))
    payload = json.loads(_unb64(payload_b64))
    config = keys.get(keyid or header.get("kid", ""))
    if config is None:
        raise BundleRefused(f"verification key corresponding to ID {keyid} not found")
    if header.get("alg") != config["algorithm"] or config["algorithm"] != "EdDSA":
        raise BundleRefused(f"algorithm {header.get('alg')} is not the configured {config['algorithm']}")
    public = serialization.load_pem_public_key(config["key"].encode())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    try:
        public.verify(_unb64(signature_b64), f"{header_b64}.{payload_b64}".encode())
    except InvalidSignature as exc:
        raise BundleRefused("failed to verify JWS signature") from exc
    if payload.get("scope", "") != scope:
        raise BundleRefused("scope mismatch")
    listed = {entry["name"]: entry for entry in payload["files"]}
    for name, content in files.items():
        entry = listed.pop(name, None)
        if entry is None:
            raise BundleRefused(f"file {name} not included in bundle signature")
        assert entry["algorithm"] == "SHA-256"
        digest = file_digest(name, content)
        if digest != entry["hash"]:
            raise BundleRefused(f"{name}: digest mismatch (want: {entry['hash']}, got: {digest})")
    if listed:
        raise BundleRefused(f"file(s) {sorted(listed)} specified in bundle signatures but not found in the target bundle")
    result: dict[str, Any] = payload
    return result
