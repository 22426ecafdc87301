"""Retention that meets the logging duty: op events past the database retention are archived per
tenant, listed with their hashes in signed checkpoints, kept for the archive retention (180 days
by default) and deleted only after it; ``armctl status`` says what is kept where."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import sqlalchemy as sa

from reconciler import settings as settings_
from reconciler.evidence import checkpoints, keys, packs, retention
from reconciler.state import database, opevents, tables
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo
from tests.evidence import tampering


def _old_events(armctl: Armctl) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    events = [
        {"tenant": tenant, "at": now - dt.timedelta(days=days), "type": "DECISION", "instance": f"{tenant}:i",
         "payload": {"n": days, "tool": "t"}}
        for tenant in ("acme", "globex")
        for days in (45, 40, 31, 1)
    ]  # fmt: skip
    with armctl.engine.begin() as connection:
        opevents.add(connection, events)
    return now


def test_events_past_the_retention_are_archived_per_tenant_and_listed_in_a_signed_checkpoint(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    now = _old_events(armctl)
    out = armctl.ok("events", "prune").stdout
    assert out.startswith("Archived and deleted 6 op events older than") and "0 archives past their 180-day retention" in out
    archive_dir = tmp_path / "state" / "archive"
    files = sorted(p.name for p in archive_dir.iterdir())
    assert len(files) == 2 and files[0].startswith("op-events-acme-") and files[1].startswith("op-events-globex-")
    with gzip.open(archive_dir / files[0], "rt") as f:
        assert {json.loads(line)["tenant"] for line in f} == {"acme"}
    rows = armctl.rows(sa.select(tables.op_event_archives).order_by(tables.op_event_archives.c.tenant))
    assert [(r["tenant"], r["events"]) for r in rows] == [("acme", 3), ("globex", 3)]
    keep = rows[0]["keep_until"] - rows[0]["last_at"]
    assert keep == dt.timedelta(days=180)
    # Each tenant's next checkpoint lists its archive with its hash: signed, right away.
    listed = {r["tenant"]: r["archives"] for r in armctl.rows(sa.select(tables.chain_checkpoints)) if r["archives"]}
    assert listed["acme"][0]["name"] == files[0] and listed["acme"][0]["sha256"] == rows[0]["sha256"]
    assert listed["globex"][0]["events"] == 3
    assert armctl.json("audit", "verify")["ok"] is True

    # What status says is kept where.
    kept = armctl.json("status")["retention"]
    assert (kept["opEventRetentionDays"], kept["archiveRetentionDays"]) == (30, 180)
    assert kept["database"]["opEvents"] == 2 and kept["archives"]["files"] == 2 and kept["archives"]["events"] == 6
    assert kept["archives"]["directory"] == str(archive_dir)
    assert kept["archives"]["nextDeletion"].startswith(str((now - dt.timedelta(days=31) + dt.timedelta(days=180)).date()))
    text = armctl.ok("status").stdout
    assert "Kept where" in text and "2 files (6 events," in text and f"in {archive_dir}/ for 180 days" in text

    # An archive altered or removed before its retention ended fails the verification.
    path = archive_dir / files[0]
    original = path.read_bytes()
    path.write_bytes(gzip.compress(b'{"tenant": "acme", "forged": true}\n'))
    result = armctl("audit", "verify")
    assert result.returncode == 1 and f"archive {files[0]} does not match its hash" in result.stdout
    path.unlink()
    result = armctl("audit", "verify")
    assert result.returncode == 1 and f"archive {files[0]} is missing from {archive_dir}" in result.stdout
    path.write_bytes(original)
    assert armctl("audit", "verify").returncode == 0


def test_archives_are_deleted_only_after_their_retention_and_the_deletion_is_listed(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    _old_events(armctl)
    archive_dir = tmp_path / "state" / "archive"
    policy = retention.Policy(30, 180, archive_dir, 300.0)
    signer = keys.signer_for(tmp_path / "state" / "keys", None, dt.datetime.now(dt.UTC))
    assert signer is not None
    now = dt.datetime.now(dt.UTC)
    with database.transaction(armctl.engine) as connection:
        assert retention.run(connection, policy, now, signer).archived == 6
    first = sorted(p.name for p in archive_dir.iterdir())
    # The newest event of those archives is 31 days old: they are kept until day 149 from now
    # (by day 148 the 1-day-old events are archived too, kept longer).
    with database.transaction(armctl.engine) as connection:
        assert retention.run(connection, policy, now + dt.timedelta(days=148), signer).pruned == []
    assert set(first) < {p.name for p in archive_dir.iterdir()}
    later = now + dt.timedelta(days=150)
    with database.transaction(armctl.engine) as connection:
        swept = retention.run(connection, policy, later, signer)
    assert sorted(swept.pruned) == first and swept.checkpoints == 2
    assert not set(first) & {p.name for p in archive_dir.iterdir()}
    with database.reading(armctl.engine) as connection:
        breaks, _ = checkpoints.verify(connection, keys.trusted(connection), archive_dir, later)
    assert breaks == []
    kept = armctl.json("status")["retention"]["archives"]
    assert (kept["files"], kept["deletedAfterRetention"]) == (2, 2)


def test_an_archive_deleted_before_its_retention_ended_is_a_break(tmp_path: Path, db_url: str, sample_repo: GitRepo) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    _old_events(armctl)
    armctl.ok("events", "prune")
    # The store's own row is rewritten to look due; the signed checkpoint still says 180 days.
    a = tables.op_event_archives
    with armctl.engine.begin() as connection:
        connection.execute(a.update().where(a.c.tenant == "acme").values(keep_until=dt.datetime.now(dt.UTC)))
    out = armctl.ok("events", "prune").stdout
    assert "1 archives past their 180-day retention deleted" in out
    result = armctl("audit", "verify")
    assert result.returncode == 1 and "was deleted at" in result.stdout and "before its retention ended" in result.stdout


def test_a_pack_carries_the_archives_of_its_range_and_names_one_that_was_altered(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    _old_events(armctl)
    armctl.ok("events", "prune")
    pack = tmp_path / "pack.tar.gz"
    armctl.ok("audit", "export", "--tenant", "acme", "--out", str(pack))
    content = dict(tampering.members(pack))
    (name,) = [n for n in content if n.startswith(packs.ARCHIVES)]
    assert "globex" not in name and b"globex" not in gzip.decompress(content[name])
    events = [json.loads(line) for line in content[packs.OP_EVENTS].splitlines()]
    assert [e["payload"]["n"] for e in events] == [1]  # the rest are in the archive
    key = tmp_path / "key.pem"
    key.write_text(next(k for k in armctl.json("keys", "list")["keys"] if k["current"])["publicKeyPem"])
    ok = armctl("audit", "verify-pack", str(pack), "--key", str(key))
    assert ok.returncode == 0, ok.stdout
    content[name] = gzip.compress(b'{"tenant": "acme", "payload": {"decision": "ALLOW"}}\n')
    altered = tampering.write_pack(tmp_path / "altered.tar.gz", list(content.items()))
    result = armctl("audit", "verify-pack", str(altered), "--key", str(key))
    assert result.returncode == 1
    assert f"{name}: does not match the hash checkpoint" in result.stdout and f"{name}: changed" in result.stdout
    # Only the range's archives: a pack of the last week holds none.
    recent = tmp_path / "recent.tar.gz"
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).isoformat()
    armctl.ok("audit", "export", "--tenant", "acme", "--since", since, "--out", str(recent))
    assert not [n for n in dict(tampering.members(recent)) if n.startswith(packs.ARCHIVES)]


def test_the_archive_retention_cannot_be_shorter_than_the_database_retention() -> None:
    import pytest

    from reconciler import errors

    with pytest.raises(
        errors.ConfigError, match="ARM_ARCHIVE_RETENTION_DAYS \\(20\\) is below ARM_OP_EVENT_RETENTION_DAYS \\(30\\)"
    ):
        settings_.Settings.from_env({"ARM_ARCHIVE_RETENTION_DAYS": "20"})
    made = settings_.Settings.from_env({"ARM_ARCHIVE_RETENTION_DAYS": "400", "ARM_CHECKPOINT_INTERVAL_SECONDS": "60"})
    assert (made.archive_retention_days, made.checkpoint_interval_seconds) == (400, 60.0)
    assert settings_.Settings.from_env({}).archive_retention_days == 180
