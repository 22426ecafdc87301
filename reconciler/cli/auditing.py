"""``armctl audit verify | export | verify-pack``: check the audit trail, export it, check an export.

``verify`` re-hashes the stored genomes and the change-record chains, checks every evaluation run
against the record written with it, and checks the signed checkpoints against the chains
(``evidence.checkpoints``) and the archives they list; ``export`` writes a tenant's audit pack
(``evidence.packing``); ``verify-pack`` checks a pack offline with nothing but the pack and a
public key (``evidence.unpacking``): no database, no settings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from reconciler import __version__, clock
from reconciler import settings as settings_
from reconciler.audit import chain, integrity
from reconciler.cli import keying, output, planview
from reconciler.evidence import checkpoints, packing, unpacking
from reconciler.evidence import keys as keys_
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["audit"]

FORMATS = click.Choice(["text", "json"])


@click.group()
def audit() -> None:
    """Check the audit trail and stored genomes; export and check audit packs."""


def _local_keys(settings: settings_.Settings) -> list[keys_.PublicKey]:
    found = [s.public for s in keys_.local_signers(settings.keys_dir)]
    if settings.signing_key_file is not None:
        found.append(keys_.load_signer(settings.signing_key_file, "file", "ARM_SIGNING_KEY_FILE").public)
    return found


@audit.command()
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def verify(settings: settings_.Settings, fmt: str) -> None:
    """Re-hash every stored genome and change record, check every evaluation run against its
    EVALUATION_RECORDED record, and the signed checkpoints against the chains (a cut-off tail, a
    rewritten chain, a missing checkpoint) and the archives they list; exit 1 naming the first break.

    A tampered genome is marked FAILED (it can no longer be deployed, and every decision of its
    instances is denied) and recorded as VERSION_INTEGRITY_FAILED the first time it is found; once
    it hashes right again it is marked OK (VERSION_INTEGRITY_VERIFIED).
    """
    db = running.open_database(settings.database)
    now = clock.SystemClock().now()
    local = _local_keys(settings)
    with database.transaction(db) as connection:
        findings = integrity.verify_genomes(connection, now)
    with database.reading(db) as connection:
        breaks = list(chain.verify(connection))
        records = connection.execute(chain.count_query()).scalar_one()
        cp_breaks, tally = checkpoints.verify(connection, keys_.trusted(connection, local), settings.archive_dir, now)
        altered = integrity.verify_runs(connection)
    tampered = [f for f in findings if not f.restored]
    restored = [f for f in findings if f.restored]
    ok = not tampered and not breaks and not cp_breaks and not altered
    unanchored = [
        {"tenant": t, "fromSeq": v.anchored + 1, "toSeq": v.records} for t, v in sorted(tally.items()) if v.records > v.anchored
    ]
    if fmt == "json":
        click.echo(
            planview.dumps(
                {
                    "ok": ok,
                    "records": records,
                    "chainBreaks": [b.__dict__ for b in breaks],
                    "tamperedGenomes": [_finding(t) for t in tampered],
                    "restoredGenomes": [_finding(t) for t in restored],
                    "checkpointBreaks": [b.__dict__ for b in cp_breaks],
                    "checkpoints": {
                        t: {"count": v.checkpoints, "anchoredSeq": v.anchored, "lastAt": v.last_at, "chainSeq": v.records}
                        for t, v in sorted(tally.items())
                    },
                    "unanchored": unanchored,
                    "alteredRuns": [r.__dict__ for r in altered],
                }
            )
        )
        sys.exit(0 if ok else 1)
    for t in findings:
        mark = "✓" if t.restored else "✗"
        click.echo(f"{mark} genome of {t.tenant}/{t.name} {t.describe()}")
    if breaks:
        first = breaks[0]
        click.echo(f"✗ change record chain of tenant {first.tenant} breaks at record {first.seq} (id {first.id}): {first.reason}")
        for b in breaks[1:]:
            click.echo(f"  also: tenant {b.tenant} record {b.seq} (id {b.id}): {b.reason}")
    if cp_breaks:
        click.echo(f"✗ {cp_breaks[0]}")
        for found in cp_breaks[1:]:
            click.echo(f"  also: {found}")
    for run in altered:
        click.echo(f"✗ evaluation run {run.run} of tenant {run.tenant} {run.reason}")
    if ok:
        anchored = sum(v.checkpoints for v in tally.values())
        click.echo(
            click.style("✓ ", fg="green") + f"{output.plural(records, 'change record')} chain correctly; every stored genome "
            f"matches its hash; every evaluation run matches its record; {output.plural(anchored, 'signed checkpoint')} "
            f"{'verifies and anchors its' if anchored == 1 else 'verify and anchor their'} records"
        )
    for gap in unanchored:
        click.echo(
            f"  tenant {gap['tenant']}: records {gap['fromSeq']} to {gap['toSeq']} are newer than its last checkpoint "
            "(the next apply or 'armctl run' anchors them)"
        )
    sys.exit(0 if ok else 1)


def _finding(found: integrity.Finding) -> dict[str, Any]:
    return {**found.__dict__, "instances": list(found.instances)}


@audit.command()
@click.option("--tenant", required=True, help="The tenant whose evidence is exported.")
@click.option("--since", default=None, help="ISO 8601 time: from then (default: the beginning).")
@click.option("--until", default=None, help="ISO 8601 time: before then (default: now).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The pack to write (.tar.gz).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def export(settings: settings_.Settings, tenant: str, since: str | None, until: str | None, out: str, fmt: str) -> None:
    """Write a tenant's audit pack: change records, decision events (redacted) and their archives,
    approvals, reconcile runs, signed checkpoints, public keys and the retention, with a manifest
    of every file's SHA-256, signed. 'armctl audit verify-pack' checks it offline."""
    from reconciler.cli import reconciling

    start = clock.parse_time(since, "--since") if since else None
    end = clock.parse_time(until, "--until") if until else None
    db = running.open_database(settings.database)
    now = clock.SystemClock().now()
    with database.reading(db) as connection:
        packing.check(connection, tenant, start, end)
    signer = keying.signer(settings)
    assert signer is not None
    with database.transaction(db) as connection:
        anchored = packing.anchor(connection, tenant, signer, now)
    with database.reading(db) as connection:
        made = packing.export(
            connection,
            tenant,
            start,
            end,
            Path(out),
            signer,
            reconciling.retention_policy(settings),
            now,
            f"armctl {__version__}",
        )
    counts = {f["name"]: f.get("records") for f in made.files if f.get("records") is not None}
    if fmt == "json":
        click.echo(planview.dumps({"pack": str(made.path), "tenant": tenant, "signedBy": made.kid, "anchoredBy": anchored,
                                   "files": made.files}))  # fmt: skip
        return
    size = made.path.stat().st_size
    click.echo(f"Wrote {made.path} ({size} bytes): audit pack of tenant {tenant}, signed by key {made.kid}.")
    for name, count in counts.items():
        click.echo(f"  {name}: {output.plural(int(count or 0), 'record')}")
    click.echo(f"Check it anywhere: armctl audit verify-pack {out} --key <public key of {made.kid}>")


@audit.command(name="verify-pack")
@click.argument("pack", type=click.Path(dir_okay=False))
@click.option("--key", "key", default=None, help="The signer's public key: a PEM file, or the key itself (base64).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def verify_pack(pack: str, key: str | None, fmt: str) -> None:
    """Check an audit pack offline, with nothing but the pack and the signer's public key: every
    changed, added, removed or reordered file or record fails with exit 1, named."""
    public = None
    if key is not None:
        source = Path(key)
        text = source.read_text() if source.is_file() else key
        public = keys_.parse_public(text, f"--key {key if not source.is_file() else source}")
    report = unpacking.verify_pack(Path(pack), public)
    if fmt == "json":
        click.echo(planview.dumps(report.as_dict()))
        sys.exit(0 if report.ok else 1)
    if report.ok:
        by = "the key given" if report.key == "given" else "the key the pack carries (pass --key to check it is yours)"
        records = sum(report.records.values())
        click.echo(
            click.style("✓ ", fg="green") + f"{pack}: audit pack of tenant {report.tenant} "
            f"({report.since or 'the beginning'} to {report.until or report.created_at}), {output.plural(report.files, 'file')}, {output.plural(records, 'record')}; "
            f"manifest signed by key {report.kid}, checked with {by}; {output.plural(report.checkpoints, 'checkpoint')} verify and anchor "
            f"records {report.chain.get('fromSeq')} to {report.chain.get('toSeq')}"
        )
        sys.exit(0)
    click.echo(f"✗ {pack}: {len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}")
    for problem in report.problems:
        click.echo(f"  {problem}")
    sys.exit(1)
