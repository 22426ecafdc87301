"""Signed OPA bundles: ``GET /v1/bundles/arm.tar.gz`` carries ``.signatures.json`` that verifies
the way OPA verifies it (``tests/evidence/opaverify.py``) with the key ``GET /v1/keys`` publishes;
any change to the bundle is refused."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired import repository
from reconciler.evidence import keys, opasigning
from reconciler.oversight import access
from reconciler.reconcile import running
from reconciler.server import app as server_app
from reconciler.state import database
from tests.conftest import GitRepo
from tests.evidence.opaverify import BundleRefused, file_digest, jws_header, read_bundle, verify_bundle
from tests.reconcile import scenario
from tests.server.serving import NOW, Server, auth, tenant_fleet


@pytest.fixture
def signed(
    git_repo: GitRepo, db_url: str, tmp_path: Path
) -> Iterator[tuple[httpx.Client, sa.Engine, dict[str, str], keys.Signer]]:
    git_repo.commit(
        {"fleet/acme.yaml": tenant_fleet("acme"), "fleet/globex.yaml": tenant_fleet("globex")}, author=scenario.AUTHOR
    )
    engine = database.connect(db_url)
    signer = keys.create(tmp_path / "keys", NOW)
    try:
        database.migrate(engine)
        running.Reconciler(engine, repository.Repository(git_repo.path), "fleet").apply("main")
        with engine.begin() as connection:
            tokens = {
                "acme": access.create(connection, "rt", "runtime", "acme", NOW),
                "globex": access.create(connection, "gx", "runtime", "globex", NOW),
            }
        with Server(server_app.create_app(engine, signer=signer)) as base, httpx.Client(base_url=base, timeout=10) as client:
            yield client, engine, tokens, signer
    finally:
        engine.dispose()


def _sidecar_keys(client: httpx.Client, token: str) -> dict[str, dict[str, str]]:
    """OPA's ``keys`` section as the example configuration builds it from ``GET /v1/keys``."""
    published = client.get("/v1/keys", headers=auth(token)).json()
    (current,) = [k for k in published["keys"] if k["current"]]
    return {"arm": {"algorithm": current["algorithm"], "key": current["publicKeyPem"]}}


def test_a_bundle_verifies_as_opa_verifies_it_with_the_published_key(signed: Any) -> None:
    client, _, tokens, signer = signed
    response = client.get("/v1/bundles/arm.tar.gz", headers=auth(tokens["acme"]))
    assert response.status_code == 200
    payload = verify_bundle(response.content, _sidecar_keys(client, tokens["acme"]), keyid="arm", scope="acme")
    names = {entry["name"] for entry in payload["files"]}
    assert {".manifest", "data.json", "policies/arm/decision.rego"} <= names and ".signatures.json" not in names
    assert jws_header(response.content) == {"alg": "EdDSA", "kid": signer.kid}
    # The header's kid is enough when the sidecar names no keyid.
    verify_bundle(response.content, {signer.kid: _sidecar_keys(client, tokens["acme"])["arm"]}, keyid="", scope="acme")
    # A sidecar polling with the ETag it has gets 304; the ETag names the key that signed.
    etag = response.headers["etag"]
    assert etag.endswith(f':acme:{signer.kid}"')
    assert client.get("/v1/bundles/arm.tar.gz", headers={**auth(tokens["acme"]), "If-None-Match": etag}).status_code == 304


def _rebuilt(data: bytes, change: dict[str, bytes | None]) -> bytes:
    files = read_bundle(data)
    for name, content in change.items():
        if content is None:
            files.pop(name)
        else:
            files[name] = content
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


def test_a_changed_added_or_removed_file_or_another_key_or_scope_is_refused(signed: Any, tmp_path: Path) -> None:
    client, _, tokens, _ = signed
    data = client.get("/v1/bundles/arm.tar.gz", headers=auth(tokens["acme"])).content
    sidecar = _sidecar_keys(client, tokens["acme"])
    files = read_bundle(data)
    loosened = json.loads(files["data.json"])
    loosened["arm"]["fleet"]["envelopes"]["acme"]["app@1.0.0"]["approvalAbove"] = "RED"
    cases = {
        "data.json: digest mismatch": {"data.json": json.dumps(loosened).encode()},
        "policies/arm/decision.rego: digest mismatch": {
            "policies/arm/decision.rego": files["policies/arm/decision.rego"] + b"\n# x"
        },
        "file policies/extra.rego not included": {"policies/extra.rego": b"package arm.ext.x\n"},
        "not found in the target bundle": {"policies/arm/gates.rego": None},
        "missing .signatures.json": {".signatures.json": None},
    }
    for expected, change in cases.items():
        with pytest.raises(BundleRefused, match=expected.replace(".", r"\.")):
            verify_bundle(_rebuilt(data, change), sidecar, keyid="arm", scope="acme")
    # The same data in another layout (whitespace, key order) still verifies: OPA hashes the JSON value.
    relaid = json.dumps(json.loads(files["data.json"]), indent=3).encode()
    verify_bundle(_rebuilt(data, {"data.json": relaid}), sidecar, keyid="arm", scope="acme")
    with pytest.raises(BundleRefused, match="scope mismatch"):
        verify_bundle(data, sidecar, keyid="arm", scope="globex")
    other = keys.create(tmp_path / "other", NOW)
    with pytest.raises(BundleRefused, match="failed to verify"):
        verify_bundle(data, {"arm": {"algorithm": "EdDSA", "key": other.public.pem()}}, keyid="arm", scope="acme")
    # Another tenant's bundle is signed for that tenant's scope.
    globex = client.get("/v1/bundles/arm.tar.gz", headers=auth(tokens["globex"])).content
    verify_bundle(globex, sidecar, keyid="arm", scope="globex")
    with pytest.raises(BundleRefused, match="scope mismatch"):
        verify_bundle(globex, sidecar, keyid="arm", scope="acme")


def test_public_keys_are_published_old_ones_kept_and_a_token_is_needed(signed: Any, tmp_path: Path) -> None:
    client, engine, tokens, signer = signed
    assert client.get("/v1/keys").status_code == 401
    first = client.get("/v1/keys", headers=auth(tokens["globex"])).json()
    assert first["current"] == signer.kid
    (key,) = first["keys"]
    assert key["kid"] == signer.kid and key["algorithm"] == "EdDSA" and key["current"] is True
    assert keys.parse_public(key["publicKeyPem"]) == signer.public == keys.parse_public(key["publicKey"])
    assert key["jwk"]["kty"] == "OKP" and key["jwk"]["crv"] == "Ed25519"
    assert "PRIVATE" not in json.dumps(first)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # the server registered its key when it started
    newer = keys.create(tmp_path / "keys", later)
    with engine.begin() as connection:
        keys.register(connection, newer.public, "managed", later)
    listed = client.get("/v1/keys", headers=auth(tokens["acme"])).json()["keys"]
    assert [k["kid"] for k in listed] == [signer.kid, newer.kid]
    assert [k["current"] for k in listed] == [True, False]  # this server still signs with its own key


# ---------------------------------------------------------------- OPA's file hash

TRICKY = {
    "unicode": "αβγ ©™ 漢字 \U0001f600",
    "separators": "a\u2028b\u2029c",
    "controls": "\x00\x01\x1f\b\f\n\r\t\x7f",
    "html": "<a href='x'>&amp;</a>",
    "quotes": 'say "hi" \\ back',
    "numbers": [1.0, 1e5, 100, -0.5, 12345678901234567890, 3.14159265358979],
    "nested": {"z": [], "a": {}, "m": [None, True, False]},
}


def test_opas_structured_hash_is_the_json_value_not_the_bytes() -> None:
    expected = file_digest("data.json", json.dumps(TRICKY, ensure_ascii=False).encode())
    for data in (
        json.dumps(TRICKY, ensure_ascii=False).encode(),
        json.dumps(TRICKY, indent=2).encode(),  # escaped non-ASCII, another layout: the same value
        json.dumps(TRICKY, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
    ):
        assert opasigning.file_hash("data.json", data) == file_digest("data.json", data) == expected
        assert opasigning.file_hash("x/data.json", data) == expected
    assert opasigning.file_hash("policy.rego", b"package x\n") == hashlib.sha256(b"package x\n").hexdigest()
    # Numbers are hashed as written: 1.0 and 1 are different files to OPA.
    assert opasigning.file_hash(".manifest", b'{"a": 1.0}') != opasigning.file_hash(".manifest", b'{"a": 1}')


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_the_structured_hash_agrees_with_gos_encoding_on_any_json(value: Any) -> None:
    data = json.dumps({"v": value}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return  # a lone surrogate is not UTF-8: no bundle file holds one
    assert opasigning.file_hash("data.json", data) == file_digest("data.json", data)
