"""``armctl version list | show | card | verify-card | lineage``: the version scorecard, the trust
signal approvers read, and the evidence that leaves the database.

``list`` prints every version with its template, lifecycle, genome hash, where it runs and what it
waits for; ``show NAME`` one version whole: lineage, evidence per suite (missing, passing or
failing, with the values, the baseline and who submitted the run), approvals, deployments and
instances, and integrity (the stored genome re-hashed now). Both read
:mod:`reconciler.evidence.scorecards`, as ``GET /v1/versions[/{name}]`` do. ``card NAME`` is the
version's signed agent card (:mod:`reconciler.evidence.cards`, as ``GET /v1/versions/{name}/card``),
``verify-card`` checks one offline, and ``lineage NAME`` is its lineage sheet
(:mod:`reconciler.evidence.lineage`, written by :mod:`reconciler.cli.lineageview`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from reconciler import clock, errors
from reconciler import settings as settings_
from reconciler.cli import evaluating, keying, lineageview, output, planview
from reconciler.evidence import cards, judging, lineage, scorecards
from reconciler.evidence import keys as keys_
from reconciler.reconcile import running
from reconciler.state import database

__all__ = ["version"]

FORMATS = click.Choice(["text", "json"])
_COLOURS = {"passing": "green", "failing": "red", "missing": "yellow"}


@click.group()
def version() -> None:
    """Version scorecards: lifecycle, evidence, approvals, deployments."""


@version.command("list")
@click.option("--tenant", default=None, help="Only this tenant's versions.")
@click.option("--template", default=None, help="Only this template's versions.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def list_(settings: settings_.Settings, tenant: str | None, template: str | None, fmt: str) -> None:
    """Every version: template, lifecycle, genome hash, where it is deployed, what it waits for."""
    with output.json_errors(fmt), database.reading(running.open_database(settings.database)) as connection:
        rows = scorecards.versions(connection, tenant=tenant, template=template)
    if fmt == "json":
        click.echo(planview.dumps(rows))
        return
    if not rows:
        click.echo("No versions match.")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        lifecycle = r["lifecycle"] if r["status"] == "ACTIVE" else f"{r['lifecycle']} (pruned)"
        if r["integrity"] != "OK":
            lifecycle += " INTEGRITY FAILED"
        where = ", ".join(f"{d['environment']} ({d['instances']})" for d in r["deployedTo"]) or "-"
        click.echo(f"{r['name']:<{width}}  {lifecycle:11} {r['genomeHash'][:19]}…  deployed: {where}")
        for message in r["waiting"]:
            click.echo(f"{'':<{width}}  waits: {message}")


@version.command()
@click.argument("name")
@click.option("--tenant", default=None, help="The version's tenant (needed only when several tenants have that name).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def show(settings: settings_.Settings, name: str, tenant: str | None, fmt: str) -> None:
    """One version's scorecard; its genome is re-hashed as it is read."""
    with output.json_errors(fmt):
        card = scorecards.show(running.open_database(settings.database), tenant, name, clock.SystemClock().now(), resolve=True)
    if fmt == "json":
        click.echo(planview.dumps(card))
        return
    _print(card)


def _print(card: dict[str, Any]) -> None:
    click.echo(f"Version {click.style(card['name'], bold=True)} of template {card['template']} (tenant {card['tenant']})")
    lifecycle = card["lifecycle"]
    if card["desiredLifecycle"] != lifecycle:
        lifecycle += f" (Git wants {card['desiredLifecycle']})"
    click.echo(f"  lifecycle:   {lifecycle}{'' if card['status'] == 'ACTIVE' else ', pruned from Git'}")
    click.echo(f"  genome:      {card['genomeHash']}")
    check = card["integrity"]
    if check["status"] == "OK":
        click.echo(f"  integrity:   {click.style('OK', fg='green')} (re-hashed {check['checkedAt'][:19]})")
    else:
        click.echo(f"  integrity:   {click.style('FAILED', fg='red')}: the stored genome hashes to {check['computedHash']}")
    lineage = card["lineage"]
    ancestors = " ← ".join(a["name"] for a in lineage["ancestors"]) or "none (a first version)"
    click.echo(f"  lineage:     {ancestors}" + (f"; children: {', '.join(lineage['children'])}" if lineage["children"] else ""))
    for message in card["waiting"]:
        click.echo(f"  waits:       {message}")
    click.echo(click.style("\nEvidence", bold=True))
    if not card["evidence"]:
        click.echo("  no EvaluationSuite applies to this template")
    for e in card["evidence"]:
        required = [*e["requiredFor"]["steps"], *(f"env {env}" for env in e["requiredFor"]["environments"])]
        status = click.style(e["status"], fg=_COLOURS[e["status"]], bold=True)
        click.echo(f"  {e['category']} suite {e['suite']}: {status} (required for {', '.join(required) or 'nothing'})")
        if e["run"] is not None:
            click.echo(
                f"    run {e['run']} at {(e['runAt'] or '')[:19]} by {e['submitter']}, {e['samples']} samples, {e['runs']} run(s) in all"
            )
            evaluating.print_values(_verdict(e), indent="    ")
        if e["baseline"]:
            click.echo(f"    baseline: {e['baseline']['version']} run {e['baseline']['run']}")
        if e["status"] != "passing":
            click.echo(f"    {e['summary']}")
    click.echo(click.style("\nApprovals", bold=True))
    if not card["approvals"]:
        click.echo("  none")
    for a in card["approvals"]:
        click.echo(f"  #{a['id']} {a['transition']}: {a['status']} ({a['required']} from {' or '.join(a['roles'])})")
        for d in a["decisions"]:
            click.echo(f"    {d['decision']} by {d['operator']} at {(d['at'] or '')[:19]}: {d['justification'] or '-'}")
    click.echo(click.style("\nDeployments", bold=True))
    if not card["deployments"]:
        click.echo("  none")
    for d in card["deployments"]:
        click.echo(f"  {d['name']} generation {d['generation']} in {d['environment']}: {d['state']}")
        for i in d["instances"]:
            held = f", held by {i['heldBy']}" if i["heldBy"] else ""
            click.echo(f"    {i['id']}: {i['state']}{held}, health {i['health']}")


def _verdict(entry: dict[str, Any]) -> judging.Verdict:
    return judging.Verdict(
        entry["suite"], entry["category"], entry["status"], entry["summary"], entry["run"], entry["samples"],
        tuple(entry["values"]), entry["baseline"],
    )  # fmt: skip


@version.command()
@click.argument("name")
@click.option("--tenant", default=None, help="The version's tenant (needed only when several tenants have that name).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="json: the signed card itself.")
@click.pass_obj
def card(settings: settings_.Settings, name: str, tenant: str | None, fmt: str) -> None:
    """The version's agent card (A2A AgentCard shape with the ARM facts), signed with the current
    key; --format json prints the card to hand out, 'armctl version verify-card' checks it."""
    with output.json_errors(fmt):
        db = running.open_database(settings.database)
        now = clock.SystemClock().now()
        signer = keying.signer(settings)
        assert signer is not None
        with database.transaction(db) as connection:
            keys_.register(connection, signer.public, signer.source, now)  # published, so the card verifies
        signed = cards.sign(cards.card(db, tenant, name, now, resolve=True), signer)
    if fmt == "json":
        click.echo(planview.dumps(signed))
        return
    click.echo(f"Agent card of {click.style(signed['name'], bold=True)} (version {signed['version']}, tenant {signed['tenant']})")
    click.echo(f"  {signed['description']}")
    click.echo(f"  lifecycle {signed['lifecycle']}, integrity {signed['integrity']['status']}, genome {signed['genomeHash']}")
    click.echo(f"  evaluation: {signed['evaluation']['status']}; " + (
        ", ".join(f"{s['suite']} {s['status']}" for s in signed["evaluation"]["suites"]) or "no suite applies"))  # fmt: skip
    approved = [f"#{a['id']} {a['transition']} {a['status']}" for a in signed["approvals"]]
    click.echo(f"  approvals: {', '.join(approved) or 'none'}")
    click.echo(f"  skills: {', '.join(s['id'] + ' [' + ', '.join(s['tags']) + ']' for s in signed['skills']) or 'none'}")
    click.echo(f"Signed by key {signer.kid} (EdDSA); '--format json' prints the card, 'armctl version verify-card' checks it.")


@version.command("verify-card")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key", default=None, help="The public key (PEM file, or base64 as 'armctl keys list' prints it); "
              "without it, the keys published in the database.")  # fmt: skip
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def verify_card(settings: settings_.Settings, path: Path, key: str | None, fmt: str) -> None:
    """Check an agent card's signature: exit 0 when a signature by the key covers the card as it
    is, 1 naming what is wrong (changed after signing, unknown key, no signature)."""
    with output.json_errors(fmt):
        try:
            document = json.loads(path.read_bytes())
        except OSError as exc:
            raise errors.NotFound(f"cannot read the card {path}: {exc.strerror or exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise errors.ConfigError(f"{path} is not a JSON agent card: {exc}") from exc
        if key is not None:
            public = keys_.parse_public(_key_text(key), "--key")
            trusted = {public.kid: public}
        else:
            with database.reading(running.open_database(settings.database)) as connection:
                trusted = keys_.trusted(connection)
        kid, problems = cards.verify(document, trusted)
    if fmt == "json":
        click.echo(planview.dumps({"ok": kid is not None, "card": str(path), "signedBy": kid, "problems": problems}))
    elif kid is not None:
        click.echo(f"✓ {path}: the card of {document.get('name')} is signed by key {kid} and unchanged since")
    else:
        click.echo(f"✗ {path}: not verified", err=True)
        for problem in problems:
            click.echo(f"  {problem}", err=True)
    if kid is None:
        sys.exit(1)


def _key_text(key: str) -> str | bytes:
    """What ``--key`` holds: a file's content when it names a readable file, else the key itself
    (a long key is no file name: the OS refuses to look it up)."""
    try:
        return Path(key).read_bytes() if Path(key).is_file() else key
    except OSError:
        return key


@version.command("lineage")
@click.argument("name")
@click.option("--tenant", default=None, help="The version's tenant (needed only when several tenants have that name).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.pass_obj
def lineage_(settings: settings_.Settings, name: str, tenant: str | None, fmt: str) -> None:
    """The version's lineage sheet: its ancestry, oldest first, with what changed in the genome at
    each step (model and parameters, prompts by hash, tools), the lifecycle steps and who approved
    them, and where each version was deployed over time."""
    with output.json_errors(fmt):
        sheet = lineage.sheet(running.open_database(settings.database), tenant, name)
    if fmt == "json":
        click.echo(planview.dumps(sheet))
        return
    for line in lineageview.markdown(sheet) if fmt == "markdown" else lineageview.text(sheet):
        click.echo(line)
