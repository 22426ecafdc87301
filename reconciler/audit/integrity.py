"""Genome integrity: re-hash stored genomes and mark the versions whose genome was altered.

A version's stored genome must hash to its stored ``genome_hash``. ``verify_genomes`` checks
them all (``armctl audit verify``); a mismatch sets ``integrity = 'FAILED'`` — the admission gate
then refuses to deploy it — and writes ``VERSION_INTEGRITY_FAILED`` once, when first found.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.desired import genome
from reconciler.state import fleetstate, tables

__all__ = ["Tampered", "check_version", "verify_genomes"]


@dataclasses.dataclass(frozen=True)
class Tampered:
    tenant: str
    name: str
    stored_hash: str
    computed_hash: str
    newly_found: bool


def check_version(stored: dict[str, object], stored_hash: str) -> str | None:
    """The hash the stored genome has, when it is not ``stored_hash``."""
    computed = genome.genome_hash(stored)
    return None if computed == stored_hash else computed


def verify_genomes(
    connection: sa.Connection, now: dt.datetime, *, tenant: str | None = None, name: str | None = None
) -> list[Tampered]:
    """Re-hash stored genomes (every one, or one version's: a detail read re-hashes the genome it
    shows) and mark those that were altered, recording each the first time it is found."""
    v = tables.agent_versions
    found = []
    records = []
    query = sa.select(v.c.id, v.c.tenant, v.c.name, v.c.genome, v.c.genome_hash, v.c.integrity).order_by(v.c.id)
    if tenant is not None:
        query = query.where(v.c.tenant == tenant)
    if name is not None:
        query = query.where(v.c.name == name)
    for row in connection.execute(query):
        computed = check_version(row.genome, row.genome_hash)
        if computed is None:
            continue
        newly = row.integrity != "FAILED"
        found.append(Tampered(row.tenant, row.name, row.genome_hash, computed, newly))
        if newly:
            connection.execute(v.update().where(v.c.id == row.id).values(integrity="FAILED"))
            records.append(
                chain.Record(
                    tenant=row.tenant,
                    type="VERSION_INTEGRITY_FAILED",
                    object_kind="AgentVersion",
                    object_name=row.name,
                    before={"genomeHash": row.genome_hash, "integrity": row.integrity},
                    after={"computedHash": computed, "integrity": "FAILED"},
                )
            )
    if records:
        chain.append(connection, records, now)
        fleetstate.bump_generation(connection)  # the admission gate's inputs changed outside Git
    return found
