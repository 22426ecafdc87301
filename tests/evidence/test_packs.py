"""Audit packs: ``armctl audit export`` writes a tenant's evidence, signed; ``armctl audit
verify-pack`` checks it offline with nothing but the pack and the key, and names every changed,
added, removed or reordered file or record — also in a pack a lying store built."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from reconciler.evidence import keys, packs
from reconciler.state import tables
from tests import armctl as armctl_
from tests import samples
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo
from tests.evidence import tampering

INSTANCE = "acme:billing-agent-dev-g1-0"


@pytest.fixture
def fleet(tmp_path: Path, db_url: str, sample_repo: GitRepo) -> Armctl:
    """The sample fleet applied, with decisions of every kind recorded since."""
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    for tool, code in (("billing.get-invoice", 0), ("shell.exec", 3), ("kb.search-articles", 0), ("payments.refund", 2)):
        args = json.dumps({"invoice": "INV-1", **({"amount": 120, "password": "hunter2-hunter2"} if code == 2 else {})})
        assert armctl("decide", "--instance", INSTANCE, "--tool", tool, "--args", args).returncode == code
    return armctl


def _key_file(armctl: Armctl, tmp_path: Path) -> Path:
    current = armctl.json("keys", "list")
    (key,) = [k for k in current["keys"] if k["current"]]
    path = tmp_path / "signer.pub.pem"
    path.write_text(key["publicKeyPem"])
    return path


def _export(armctl: Armctl, out: Path, *extra: str) -> dict[str, Any]:
    result = armctl.json("audit", "export", "--tenant", "acme", "--out", str(out), *extra)
    assert isinstance(result, dict)
    return result


def verify_pack(pack: Path, *args: str) -> armctl_.Result:
    """``armctl audit verify-pack`` with no state, database or settings: only the pack (and key)."""
    return armctl_.invoke(("audit", "verify-pack", str(pack), *args), {"ARM_DATABASE_URL": "postgresql+psycopg://nowhere:1/none"})


def test_a_pack_holds_the_tenants_evidence_and_verifies_offline_with_the_key(fleet: Armctl, tmp_path: Path) -> None:
    pack = tmp_path / "pack.tar.gz"
    made = _export(fleet, pack)
    names = [name for name, _ in tampering.members(pack)]
    assert names[:2] == [packs.MANIFEST, packs.SIGNATURE]
    assert names[2:] == [f["name"] for f in made["files"]]
    assert {packs.KEYS, packs.RETENTION, packs.CHECKPOINTS, packs.CHANGE_RECORDS, packs.APPROVALS, packs.EVALUATION_RUNS,
            packs.RUNS, packs.OP_EVENTS} <= set(names)  # fmt: skip
    content = dict(tampering.members(pack))
    events = [orjson.loads(line) for line in content[packs.OP_EVENTS].splitlines()]
    assert [e["payload"]["tool"] for e in events if e["type"] == "DECISION"] == [
        "billing.get-invoice", "shell.exec", "kb.search-articles", "payments.refund"
    ]  # fmt: skip
    assert events[-1]["payload"]["args"] == {"invoice": "INV-1", "amount": 120, "password": "[REDACTED]"}
    assert b"hunter2-hunter2" not in b"".join(content.values())
    runs = [orjson.loads(line) for line in content[packs.RUNS].splitlines()]
    assert runs[0]["sha"] == fleet.repo.git("rev-parse", "HEAD") and runs[0]["author"].startswith("Ada Lovelace")
    approvals = [orjson.loads(line) for line in content[packs.APPROVALS].splitlines()]
    assert any(a["subject_kind"] == "ToolCall" for a in approvals)
    evaluations = [orjson.loads(line) for line in content[packs.EVALUATION_RUNS].splitlines()]
    assert [(r["version"], r["suite"], r["samples"]) for r in evaluations] == [(v, s, n) for v, s, _, n in samples.SAMPLE_RUNS]
    assert {r["verdict"] for r in evaluations} == {"passing"} and evaluations[0]["genomeHash"].startswith("sha256:")
    retention = json.loads(content[packs.RETENTION])
    assert (retention["opEventRetentionDays"], retention["archiveRetentionDays"]) == (30, 180)
    # Public keys only: no private key is ever exported.
    published = json.loads(content[packs.KEYS])["keys"]
    assert [k["kid"] for k in published] == [made["signedBy"]]
    private = next((tmp_path / "state" / "keys").glob("*.pem")).read_text().splitlines()[1].encode()
    assert private not in pack.read_bytes() and all(private not in c and b"PRIVATE KEY" not in c for c in content.values())
    # The export anchored the DENY's record with a new checkpoint: the pack's chain is all anchored.
    manifest = json.loads(content[packs.MANIFEST])
    checkpoints = [orjson.loads(line) for line in content[packs.CHECKPOINTS].splitlines()]
    assert checkpoints[-1]["seq"] == manifest["chain"]["toSeq"] and made["anchoredBy"] == len(checkpoints)

    key = _key_file(fleet, tmp_path)
    checked = verify_pack(pack, "--key", str(key))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith(f"✓ {pack}: audit pack of tenant acme") and "checked with the key given" in checked.stdout
    report = json.loads(
        verify_pack(pack, "--key", keys.parse_public(key.read_text()).as_dict()["publicKey"], "--format", "json").stdout
    )
    assert report["ok"] is True and report["key"] == "given" and report["records"][packs.OP_EVENTS] == 4
    assert report["records"][packs.EVALUATION_RUNS] == len(samples.SAMPLE_RUNS)
    # Without --key it checks the pack against the key it carries, and says so.
    assert "the key the pack carries (pass --key" in verify_pack(pack).stdout


def _repacked(pack: Path, tmp_path: Path, change: Any) -> Path:
    files = tampering.members(pack)
    return tampering.write_pack(tmp_path / "tampered.tar.gz", change(files))


def _replace(name: str, edit: Any) -> Any:
    def change(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, edit(c) if n == name else c) for n, c in files]

    return change


def _swap_lines(first: int, second: int) -> Any:
    def edit(lines: list[bytes]) -> list[bytes]:
        lines[first], lines[second] = lines[second], lines[first]
        return lines

    return edit


def _alter_event(lines: list[bytes]) -> list[bytes]:
    assert b'"decision":"DENY"' in lines[1]
    lines[1] = lines[1].replace(b'"decision":"DENY"', b'"decision":"ALLOW"')
    return lines


def _resort_event(lines: list[bytes]) -> list[bytes]:
    event = orjson.loads(lines[1])
    event["payload"]["decision"] = "ALLOW"
    lines[1] = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return lines


CASES: dict[str, tuple[Any, list[str]]] = {
    "a changed byte in a record": (
        _replace(packs.CHANGE_RECORDS, lambda c: c.replace(b'"author":"Ada', b'"author":"Eve', 1)),
        [
            f"{packs.CHANGE_RECORDS}, line 1: record 1 does not link",
            f"{packs.CHANGE_RECORDS}, line 1: record 1: its hash does not match",
            f"{packs.CHANGE_RECORDS}: changed: its SHA-256",
        ],
    ),
    "a decision turned into an ALLOW": (
        _replace(packs.OP_EVENTS, lambda c: tampering.edit_lines(c, _alter_event)),
        [f"{packs.OP_EVENTS}, line 2: event ", "does not link to the line before", f"{packs.OP_EVENTS}: changed"],
    ),
    "a decision rewritten as a new JSON object": (
        _replace(packs.OP_EVENTS, lambda c: tampering.edit_lines(c, _resort_event)),
        [f"{packs.OP_EVENTS}, line 2: event 2 is not in a pack's form", f"{packs.OP_EVENTS}: changed"],
    ),
    "two records reordered": (
        _replace(packs.CHANGE_RECORDS, lambda c: tampering.edit_lines(c, _swap_lines(3, 4))),
        [f"{packs.CHANGE_RECORDS}, line 4: record 5 does not link", "record 5 where record 4 belongs"],
    ),
    "a record removed": (
        _replace(packs.OP_EVENTS, lambda c: tampering.edit_lines(c, lambda lines: lines[:1] + lines[2:])),
        [f"{packs.OP_EVENTS}, line 2: event 3 does not link", "holds 3 records, the manifest says 4"],
    ),
    "a record added": (
        _replace(packs.APPROVALS, lambda c: c + c.splitlines(keepends=True)[0]),
        [f"{packs.APPROVALS}, line ", "does not link to the line before", "records, the manifest says"],
    ),
    "a file removed": (
        lambda files: [(n, c) for n, c in files if n != packs.APPROVALS],
        [f"{packs.APPROVALS}: listed in the manifest but not in the pack (removed)"],
    ),
    "a file added": (
        lambda files: [*files, ("notes.txt", b"trust me\n")],
        ["notes.txt: not listed in the manifest (added)"],
    ),
    "two files reordered": (
        lambda files: [*files[:4], files[5], files[4], *files[6:]],
        ["out of place: the manifest puts", "(reordered)"],
    ),
    "the manifest edited": (
        _replace(packs.MANIFEST, lambda c: c.replace(b'"tenant": "acme"', b'"tenant": "acme" ')),
        [f"{packs.MANIFEST}: the signature by key"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_change_to_a_pack_fails_naming_the_file_and_record(fleet: Armctl, tmp_path: Path, case: str) -> None:
    pack = tmp_path / "pack.tar.gz"
    _export(fleet, pack)
    key = _key_file(fleet, tmp_path)
    change, expected = CASES[case]
    result = verify_pack(_repacked(pack, tmp_path, change), "--key", str(key))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout, f"{case}: {text!r} not in\n{result.stdout}"


def test_a_pack_re_signed_by_someone_else_fails_against_the_real_key(fleet: Armctl, tmp_path: Path) -> None:
    pack = tmp_path / "pack.tar.gz"
    _export(fleet, pack)
    key = _key_file(fleet, tmp_path)
    forger = keys.create(tmp_path / "forger", dt.datetime.now(dt.UTC))
    files = dict(tampering.members(pack))
    manifest = json.loads(files[packs.MANIFEST])
    forged_keys = json.dumps({"keys": [forger.public.as_dict()]}).encode()
    for entry in manifest["files"]:
        if entry["name"] == packs.KEYS:
            entry["sha256"], entry["bytes"] = hashlib.sha256(forged_keys).hexdigest(), len(forged_keys)
    manifest_bytes = json.dumps(manifest).encode()
    signature = {"algorithm": "EdDSA", "kid": forger.kid,
                 "signature": base64.b64encode(forger.sign(manifest_bytes)).decode()}  # fmt: skip
    files[packs.MANIFEST], files[packs.SIGNATURE], files[packs.KEYS] = manifest_bytes, json.dumps(signature).encode(), forged_keys
    forged = tampering.write_pack(tmp_path / "forged.tar.gz", list(files.items()))
    result = verify_pack(forged, "--key", str(key))
    assert result.returncode == 1
    assert f"signature.json: signed by key {forger.kid}, not by the key given ({keys.parse_public(key.read_text()).kid})" in (
        result.stdout
    )
    # Even against the key it carries it fails: its checkpoints were signed by the real key,
    # which the forged keys.json no longer lists.
    alone = verify_pack(forged)
    assert alone.returncode == 1 and "checkpoints.jsonl: checkpoint 1: signed by key" in alone.stdout
    assert "which is not a known key" in alone.stdout


def test_a_pack_built_by_a_lying_store_fails(fleet: Armctl, tmp_path: Path) -> None:
    """The store edits a record and re-hashes the chain from there, without the key, before the
    export: the pack is signed (the exporter signs what it reads), its chain links, and still the
    checkpoints signed before the lie anchor the old hashes."""

    def lie(row: dict[str, Any]) -> None:
        row["after"] = {**(row["after"] or {}), "lifecycle": "APPROVED"}

    tampering.rewrite_and_rehash(fleet.engine, "acme", 3, lie)
    pack = tmp_path / "pack.tar.gz"
    _export(fleet, pack)
    result = verify_pack(pack, "--key", str(_key_file(fleet, tmp_path)))
    assert result.returncode == 1
    assert f"{packs.CHANGE_RECORDS}: checkpoint 1: record " in result.stdout and "the chain was rewritten" in result.stdout
    # Nothing but the checkpoints betrays it: every line and file hash matches its manifest.
    assert "changed:" not in result.stdout and "does not link" not in result.stdout


def test_a_pack_holding_an_evaluation_run_the_store_altered_fails(fleet: Armctl, tmp_path: Path) -> None:
    """The store drops the runs' append-only guard and raises a run's score before the export:
    the pack is signed and every line links, but the run no longer says what its hash-chained
    EVALUATION_RECORDED record says."""
    with fleet.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("DROP TRIGGER evaluation_runs_append_only ON evaluation_runs")
        else:
            connection.exec_driver_sql("DROP TRIGGER evaluation_runs_no_update")
        connection.execute(sa.update(tables.evaluation_runs).where(tables.evaluation_runs.c.id == 2).values(samples=5000))
    pack = tmp_path / "pack.tar.gz"
    _export(fleet, pack)
    result = verify_pack(pack, "--key", str(_key_file(fleet, tmp_path)))
    assert result.returncode == 1
    assert f"{packs.EVALUATION_RUNS}, line 2: evaluation run 2 differs from its EVALUATION_RECORDED record in samples" in (
        result.stdout
    )
    assert "changed:" not in result.stdout and "does not link" not in result.stdout


def test_a_pack_of_a_store_that_cut_its_newest_records_fails(fleet: Armctl, tmp_path: Path) -> None:
    pack = tmp_path / "before.tar.gz"
    _export(fleet, pack)  # anchors the decisions' records
    cut = tampering.cut_newest(fleet.engine, "acme", 1)
    after = tmp_path / "after.tar.gz"
    _export(fleet, after)
    result = verify_pack(after, "--key", str(_key_file(fleet, tmp_path)))
    assert result.returncode == 1
    assert f"anchors record {cut[0]}" in result.stdout and "tail truncated" in result.stdout


def test_a_pack_of_a_time_range_holds_a_stretch_of_the_chain_and_verifies(fleet: Armctl, tmp_path: Path) -> None:
    history = fleet.json("history", "--tenant", "acme", "--limit", "1000")
    split = history[-2]["at"]  # the last two records (the DENY and the approval request)
    pack = tmp_path / "late.tar.gz"
    _export(fleet, pack, "--since", split)
    content = dict(tampering.members(pack))
    records = [orjson.loads(line) for line in content[packs.CHANGE_RECORDS].splitlines()]
    assert [r["body"]["seq"] for r in records] == [h["seq"] for h in history[-2:]]
    assert verify_pack(pack, "--key", str(_key_file(fleet, tmp_path))).returncode == 0
    early = tmp_path / "early.tar.gz"
    _export(fleet, early, "--until", split)
    assert verify_pack(early, "--key", str(_key_file(fleet, tmp_path))).returncode == 0
    assert len(dict(tampering.members(early))[packs.CHANGE_RECORDS].splitlines()) == len(history) - 2


def test_bad_input_is_refused_with_a_clear_error(fleet: Armctl, tmp_path: Path) -> None:
    assert fleet.refused("audit", "export", "--tenant", "nobody", "--out", str(tmp_path / "x.tar.gz")) == (
        "NotFound: tenant 'nobody' does not exist"
    )
    assert not (tmp_path / "x.tar.gz").exists()
    refused = fleet.refused("audit", "export", "--tenant", "acme", "--since", "soon", "--out", str(tmp_path / "x.tar.gz"))
    assert refused.startswith("ConfigError: --since: 'soon' is not an ISO 8601 time")
    missing = verify_pack(tmp_path / "none.tar.gz")
    assert missing.returncode == 1 and missing.stderr.startswith("NotFound: no audit pack at")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    broken = verify_pack(junk)
    assert broken.returncode == 1 and "not a readable gzipped tar" in broken.stdout and "Traceback" not in broken.stderr
    bad_key = verify_pack(junk, "--key", "not-a-key")
    assert bad_key.returncode == 1 and bad_key.stderr.startswith("ConfigError: --key not-a-key")
    report = json.loads(verify_pack(junk, "--format", "json").stdout)
    assert report["ok"] is False and report["problems"][0]["file"] == "junk.tar.gz"
