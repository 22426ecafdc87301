"""Signed checkpoints: written at every apply, and ``armctl audit verify`` catches what the hash
chain alone cannot — the newest records cut off, a chain rewritten and re-hashed without the key,
a checkpoint removed or forged — naming the checkpoint and the record."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.desired import genome
from reconciler.evidence import checkpoints, keys
from reconciler.state import database, tables
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo
from tests.evidence import tampering


def _checkpoints(armctl: Armctl, tenant: str = "acme") -> list[dict[str, Any]]:
    c = tables.chain_checkpoints.c
    return armctl.rows(sa.select(tables.chain_checkpoints).where(c.tenant == tenant).order_by(c.number))


def _change(repo: GitRepo, name: str) -> None:
    """A commit that changes the fleet (a new Project of acme), so its apply moves acme's chain."""
    project = f"apiVersion: arm/v1\nkind: Project\nmetadata: {{name: {name}, tenant: acme}}\n"
    repo.commit({f"fleet/{name}.yaml": project}, f"add {name}")


def _decide_denied(armctl: Armctl, times: int = 1) -> None:
    """DENY decisions: each appends a change record to acme's chain, outside any apply."""
    for _ in range(times):
        assert armctl("decide", "--instance", "acme:billing-agent-dev-g1-0", "--tool", "shell.exec").returncode == 3


def test_an_apply_signs_a_checkpoint_of_the_chain_with_a_key_made_on_first_use(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = Armctl(tmp_path, db_url, sample_repo)
    armctl.ok("init")
    applied = armctl.ok("apply")
    assert "Created signing key" in applied.stderr
    (key_file,) = (tmp_path / "state" / "keys").glob("*.pem")
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert os.stat(key_file.parent).st_mode & 0o777 == 0o700
    (cp,) = _checkpoints(armctl)
    records = armctl.rows(sa.select(tables.change_records).where(tables.change_records.c.tenant == "acme"))
    head = max(records, key=lambda r: r["seq"])
    assert (cp["number"], cp["seq"], cp["head"], cp["previous"]) == (1, head["seq"], head["hash"], checkpoints.GENESIS)
    signer = keys.load_signer(key_file, "managed", "test")
    assert cp["kid"] == signer.kid
    assert signer.public.verify(base64.b64decode(cp["signature"]), genome.canonical_json(checkpoints.body(cp)))
    # The private key is nowhere in the database.
    private = key_file.read_text().splitlines()[1]
    dump = json.dumps([armctl.rows(sa.select(t)) for t in tables.metadata.sorted_tables], default=str)
    assert private not in dump and "PRIVATE KEY" not in dump

    # Applying the same commit again writes nothing, no checkpoint either; a chain that moved
    # (decisions denied) gets its next checkpoint at the next apply, linked to the first.
    armctl.ok("apply")
    assert len(_checkpoints(armctl)) == 1
    _decide_denied(armctl, 2)
    _change(sample_repo, "extra")
    armctl.ok("apply")
    first, second = _checkpoints(armctl)
    assert (second["number"], second["previous"], second["seq"]) == (2, first["hash"], first["seq"] + 3)
    report = armctl.json("audit", "verify")
    assert report["ok"] is True and report["checkpoints"]["acme"]["count"] == 2
    assert report["unanchored"] == []


def test_audit_verify_catches_a_deleted_newest_record(tmp_path: Path, db_url: str, sample_repo: GitRepo) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    newest = _checkpoints(armctl)[-1]["number"]  # one per apply that moved the chain
    (cut,) = tampering.cut_newest(armctl.engine, "acme")
    # The chain alone still verifies: nothing in it says a record is missing at the end.
    with armctl.engine.connect() as connection:
        assert list(chain.verify(connection)) == []
    result = armctl("audit", "verify")
    assert result.returncode == 1
    assert f"✗ tenant acme, checkpoint {newest}, record {cut}: the chain ends at record {cut - 1}" in result.stdout
    assert "tail truncated" in result.stdout
    report = json.loads(armctl("audit", "verify", "--format", "json").stdout)
    (found,) = report["checkpointBreaks"]
    assert (found["tenant"], found["checkpoint"], found["record"]) == ("acme", newest, cut)
    # The periodic checkpoint does not anchor the shortened chain: the cut stays visible.
    signer = keys.signer_for(tmp_path / "state" / "keys", None, dt.datetime.now(dt.UTC))
    assert signer is not None
    with database.transaction(armctl.engine) as connection:
        assert checkpoints.write(connection, signer, dt.datetime.now(dt.UTC)) == []
    assert armctl("audit", "verify").returncode == 1


def test_audit_verify_catches_a_chain_rewritten_and_rehashed_without_the_key(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    cp = _checkpoints(armctl)[0]  # the first checkpoint already covers record 5
    assert cp["seq"] >= 5

    def lie(row: dict[str, Any]) -> None:
        row["author"] = "Mallory <mallory@evil.example>"

    tampering.rewrite_and_rehash(armctl.engine, "acme", 5, lie)
    with armctl.engine.connect() as connection:
        assert list(chain.verify(connection)) == []  # the lie is internally consistent
    result = armctl("audit", "verify")
    assert result.returncode == 1
    assert f"tenant acme, checkpoint 1, record {cp['seq']}: record {cp['seq']} hashes to" in result.stdout
    assert "the chain was rewritten" in result.stdout


def test_audit_verify_catches_a_removed_a_forged_and_an_altered_checkpoint(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    made = len(_checkpoints(armctl))  # the sample's applies each signed one
    for change in range(3):  # three more: each after a DENY and an apply
        _decide_denied(armctl)
        _change(sample_repo, f"extra-{change}")
        armctl.ok("apply")
    assert [c["number"] for c in _checkpoints(armctl)] == list(range(1, made + 4))
    c = tables.chain_checkpoints
    with armctl.engine.begin() as connection:
        connection.execute(c.delete().where(c.c.tenant == "acme", c.c.number == 2))
    result = armctl("audit", "verify")
    assert result.returncode == 1
    assert "tenant acme, checkpoint 3: checkpoint 2 missing: the numbers jump from 1 to 3" in result.stdout

    # A checkpoint made up with another key (one the store never published) does not verify.
    rows = _checkpoints(armctl)
    forger = keys.create(tmp_path / "forger", dt.datetime.now(dt.UTC))
    fake = {**rows[0], "number": 2, "previous": rows[0]["hash"], "kid": forger.kid}
    fake["signature"] = base64.b64encode(forger.sign(genome.canonical_json(checkpoints.body(fake)))).decode()
    fake["hash"] = checkpoints.checkpoint_hash(fake)
    fake.pop("id")
    with armctl.engine.begin() as connection:
        connection.execute(c.insert().values(**fake))
        connection.execute(c.update().where(c.c.tenant == "acme", c.c.number == 3).values(previous=fake["hash"]))
    report = json.loads(armctl("audit", "verify", "--format", "json").stdout)
    reasons = {(b["checkpoint"], b["reason"]) for b in report["checkpointBreaks"]}
    assert (2, f"signed by key {forger.kid}, which is not a known key") in reasons
    # Checkpoint 3 was re-linked without its key: its signature no longer verifies.
    assert any(n == 3 and "signature does not verify" in r for n, r in reasons)
    assert report["ok"] is False


def test_a_checkpoint_is_signed_by_a_key_brought_in_through_arm_signing_key_file(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    own = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "org-key.pem"
    path.write_bytes(
        own.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    armctl = Armctl(tmp_path, db_url, sample_repo)
    armctl.env["ARM_SIGNING_KEY_FILE"] = str(path)
    armctl.ok("init")
    armctl.ok("apply")
    kid = keys.kid_of(own.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    assert {c["kid"] for c in _checkpoints(armctl)} == {kid}
    assert not (tmp_path / "state" / "keys").exists()  # no managed key was made
    listed = armctl.json("keys", "list")
    assert listed["current"] == kid and listed["keys"][0]["source"] == "file"
    assert armctl.refused("keys", "create").startswith("ConfigError: ARM_SIGNING_KEY_FILE is set")
    # A file that is not an Ed25519 private key is refused, naming the variable, changing nothing.
    path.write_text("not a key")
    refused = armctl.refused("apply")
    assert refused.startswith("ConfigError: ARM_SIGNING_KEY_FILE:") and str(path) in refused
    assert "Traceback" not in refused


def test_keys_rotate_and_what_an_old_key_signed_still_verifies(tmp_path: Path, db_url: str, sample_repo: GitRepo) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    first = armctl.json("keys", "list")["current"]
    before = [c["kid"] for c in _checkpoints(armctl)]
    assert set(before) == {first}
    made = armctl.json("keys", "create")
    assert made["kid"] != first and made["current"] is True and "PRIVATE" not in json.dumps(made)
    assert os.stat(made["path"]).st_mode & 0o777 == 0o600
    _decide_denied(armctl)
    _change(sample_repo, "rotated")
    armctl.ok("apply")
    assert [c["kid"] for c in _checkpoints(armctl)] == [*before, made["kid"]]
    listed = armctl.json("keys", "list")
    assert listed["current"] == made["kid"]
    assert [(k["kid"], k["current"], k["published"]) for k in listed["keys"]] == [(first, False, True), (made["kid"], True, True)]
    text = armctl.ok("keys", "list").stdout
    assert f"* {made['kid']}" in text and f"  {first}" in text
    # The old key file may go: its public half stays published, and its checkpoint verifies.
    next(p for p in (tmp_path / "state" / "keys").glob(f"*{first}.pem")).unlink()
    assert armctl.json("audit", "verify")["ok"] is True
