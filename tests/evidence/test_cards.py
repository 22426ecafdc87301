"""Agent cards and lineage sheets on SQLite and PostgreSQL: the card a real server hands out,
checked with the public key it publishes as any A2A client would (JWS over the canonical card),
a changed card refused; the lineage sheet of a child version (its genome's changes, its steps,
where its parent ran), in text, Markdown and JSON, as a user runs ``armctl``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler.desired import genome
from reconciler.evidence import cards, keys, recording
from reconciler.oversight import access
from reconciler.server import app as server_app
from reconciler.state import tables
from tests import armctl
from tests.evidence import fleetdata
from tests.evidence.conftest import Fleet
from tests.reconcile import scenario
from tests.server.serving import Server, auth


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_jws(card: dict[str, object], public_pem: str) -> dict[str, object]:
    """What an A2A client does with a card's signature, written here from the standards, not
    from the module under test: JWS (RFC 7515) with a detached payload, the card without
    ``signatures`` in canonical JSON (RFC 8785); raises InvalidSignature. The protected header."""
    (entry,) = card["signatures"]  # type: ignore[misc]
    header = json.loads(_unb64url(entry["protected"]))
    unsigned = {k: v for k, v in card.items() if k != "signatures"}
    payload = base64.urlsafe_b64encode(genome.canonical_json(unsigned)).rstrip(b"=")
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, ed25519.Ed25519PublicKey)
    key.verify(_unb64url(entry["signature"]), entry["protected"].encode() + b"." + payload)
    return dict(header)


def record_passing_runs(fleet: Fleet) -> None:
    with fleet.engine.begin() as connection:
        for suite, metrics in (("jailbreak", {"refusal_rate": 1.0}), ("drift", {"resolution": 0.9}), ("qa", {"pass_rate": 0.95})):
            recording.submit(
                connection, "acme", recording.Submitter("ci", "pipeline"), version="app@1.0.0", suite=suite, metrics=metrics,
                samples=200, now=fleetdata.NOW,
            )  # fmt: skip
    fleet.apply()  # app@1.0.0: TESTING -> CANDIDATE


def test_a_served_card_verifies_with_the_published_key_and_a_changed_one_does_not(fleet: Fleet, tmp_path: Path) -> None:
    record_passing_runs(fleet)
    signer = keys.create(tmp_path / "keys", fleetdata.NOW)
    with fleet.engine.begin() as connection:
        runtime = access.create(connection, "rt", "runtime", "acme", fleetdata.NOW)
        narrow = access.create(connection, "other-ci", "ci", "acme", fleetdata.NOW, templates=["other"])
    application = server_app.create_app(fleet.engine, clock=fleet.clock, sweep_seconds=None, policy_seconds=None, signer=signer)
    with Server(application) as base, httpx.Client(base_url=base, timeout=10) as client:
        answer = client.get("/v1/versions/app@1.0.0/card", headers=auth(runtime))
        assert answer.status_code == 200, answer.text
        card = answer.json()
        published = client.get("/v1/keys", headers=auth(runtime)).json()
        assert client.get("/v1/versions/app@1.0.0/card", headers=auth(narrow)).status_code == 404
        missing = client.get("/v1/versions/app@9.9.9/card", headers=auth(runtime))
        assert missing.status_code == 404 and "app@9.9.9" in missing.json()["message"]
        assert client.get("/v1/versions/app@1.0.0/card").status_code == 401

    ((genome_hash,),) = scenario.rows(fleet.engine, tables.agent_versions, "genome_hash", name="app@1.0.0")
    # The A2A shape, skills from the tool grants, and the ARM facts.
    assert (card["protocolVersion"], card["name"], card["version"]) == (cards.PROTOCOL_VERSION, "app@1.0.0", "1.0.0")
    assert card["provider"]["organization"] == "acme" and card["defaultInputModes"] == ["text/plain"]
    assert [s["id"] for s in card["skills"]] == ["crm.lookup"] and card["skills"][0]["tags"][0].startswith("risk:")
    assert [e["uri"] for e in card["capabilities"]["extensions"]] == [cards.EXTENSION]
    assert (card["genomeHash"], card["lifecycle"], card["integrity"]["status"]) == (genome_hash, "CANDIDATE", "OK")
    assert card["evaluation"]["status"] == "passing"
    assert {(s["suite"], s["status"]) for s in card["evaluation"]["suites"]} == {
        ("jailbreak", "passing"),
        ("drift", "passing"),
        ("qa", "passing"),
    }
    assert card["approvals"] == [] and card["deployedTo"] == ["dev"] and "sources" in card["envelope"]

    (current,) = [k for k in published["keys"] if k["current"]]
    assert current["kid"] == signer.kid
    header = check_jws(card, current["publicKeyPem"])
    assert header == {"alg": "EdDSA", "kid": signer.kid, "typ": "JOSE"}
    assert cards.verify(card, {signer.kid: keys.parse_public(current["publicKey"])}) == (signer.kid, [])

    forged = card | {"lifecycle": "APPROVED"}
    with pytest.raises(InvalidSignature):
        check_jws(forged, current["publicKeyPem"])
    kid, problems = cards.verify(forged, {signer.kid: signer.public})
    assert kid is None and problems == [
        f"signature 1 by key {signer.kid} does not verify: the card was changed after it was signed"
    ]
    other = keys.create(tmp_path / "other", fleetdata.NOW)
    assert cards.verify(card, {other.kid: other.public})[1] == [f"signature 1 is by key {signer.kid}, which is not a known key"]


def test_the_lineage_sheet_and_the_card_as_armctl_prints_them(fleet: Fleet, db_url: str, tmp_path: Path) -> None:
    record_passing_runs(fleet)
    env = {"ARM_STATE_DIR": str(tmp_path / "state"), "ARM_DATABASE_URL": db_url}

    sheet = armctl.invoke(["version", "lineage", "app@2.0.0", "--format", "json"], env).json()
    one, two = sheet["ancestry"]
    assert (sheet["version"], sheet["template"], one["name"], two["name"]) == ("app@2.0.0", "app", "app@1.0.0", "app@2.0.0")
    assert one["changes"] is None and two["parent"] == "app@1.0.0"
    assert [(s["from"], s["to"]) for s in one["steps"]] == [("DRAFT", "TESTING"), ("TESTING", "CANDIDATE")]
    assert one["created"]["author"] == scenario.AUTHOR and len(one["created"]["sha"]) == 40
    assert [(d["deployment"], d["environment"], d["until"]) for d in one["deployments"]] == [("app-dev", "dev", None)]
    prompts = two["changes"]["prompts"]
    assert prompts["added"] == prompts["removed"] == [] and [p["role"] for p in prompts["changed"]] == ["system"]
    assert two["changes"]["model"] == [] and two["changes"]["tools"] == {"added": [], "removed": [], "changed": []}
    assert two["deployments"] == [] and two["lifecycle"] == "DRAFT" and sheet["children"] == []
    first = armctl.invoke(["version", "lineage", "app@1.0.0"], env).stdout
    assert first.rstrip().endswith("Children of app@1.0.0: app@2.0.0")

    text = armctl.invoke(["version", "lineage", "app@2.0.0"], env)
    assert text.returncode == 0, text.stderr
    assert "  changes from app@1.0.0:" in text.stdout and "    prompt changed (system): sha256:" in text.stdout
    assert "    TESTING → CANDIDATE at " in text.stdout and "    app-dev generation 1 in dev: " in text.stdout
    markdown = armctl.invoke(["version", "lineage", "app@2.0.0", "--format", "markdown"], env).stdout
    assert (
        markdown.startswith("# Lineage of `app@2.0.0`\n") and "## `app@1.0.0`" in markdown and "- **Deployed:** never" in markdown
    )
    unknown = armctl.invoke(["version", "lineage", "app@9.9.9", "--format", "json"], env)
    assert unknown.returncode == 1 and unknown.json()["error"] == "NotFound"

    # The card, signed by the managed key the command makes, published, checked offline.
    shown = armctl.invoke(["version", "card", "app@1.0.0", "--format", "json"], env)
    assert shown.returncode == 0, shown.stderr
    path = tmp_path / "card.json"
    path.write_text(shown.stdout)
    listed = armctl.invoke(["keys", "list", "--format", "json"], env).json()
    (current,) = [k for k in listed["keys"] if k["current"]]
    assert current["published"] is True
    checked = armctl.invoke(["version", "verify-card", str(path), "--key", current["publicKey"]], env)
    assert checked.returncode == 0 and f"signed by key {current['kid']}" in checked.stdout
    # The key as GET /v1/keys lists it (a JSON document longer than any file name) works too.
    as_listed = json.dumps({k: current[k] for k in ("kid", "publicKey", "publicKeyPem", "spki", "jwk")})
    assert armctl.invoke(["version", "verify-card", str(path), "--key", as_listed], env).returncode == 0
    missing = armctl.invoke(["version", "verify-card", str(tmp_path / "none.json"), "--format", "json"], env)
    assert missing.returncode == 1 and missing.json()["error"] == "NotFound"
    (tmp_path / "junk.json").write_text("{not json")
    junk = armctl.invoke(["version", "verify-card", str(tmp_path / "junk.json")], env)
    assert junk.returncode == 1 and junk.stderr.startswith("ConfigError: ") and "Traceback" not in junk.stderr
    path.write_text(json.dumps(json.loads(shown.stdout) | {"genomeHash": "sha256:" + "0" * 64}))
    refused = armctl.invoke(["version", "verify-card", str(path), "--format", "json"], env)  # keys from the database
    assert refused.returncode == 1 and refused.json()["ok"] is False
    assert "the card was changed after it was signed" in refused.json()["problems"][0]
    with fleet.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tables.signing_keys)).scalar_one() >= 1
