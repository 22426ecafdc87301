"""Genome integrity: re-hash stored genomes, mark the versions whose genome was altered, and
clear the mark when the genome verifies again.

A version's stored genome must hash to its stored ``genome_hash``. ``verify_genomes`` checks
them all (``armctl audit verify``, and the daemon every ``ARM_CHECKPOINT_INTERVAL_SECONDS``). A
mismatch sets ``integrity = 'FAILED'`` and writes ``VERSION_INTEGRITY_FAILED`` once, when first
found: the admission gate then refuses to deploy the version, and the decider denies every
decision of its instances (reason ``VERSION_INTEGRITY_FAILED``). A FAILED version whose genome
hashes right again (restored) is set back to ``OK`` with ``VERSION_INTEGRITY_VERIFIED``. Either
change bumps the state generation, so the decider's cached resolution is rebuilt at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.desired import genome
from reconciler.state import fleetstate, tables

__all__ = ["Finding", "Tampered", "check_version", "verify_genomes"]


@dataclasses.dataclass(frozen=True)
class Finding:
    """A version whose integrity is or was FAILED: still altered, or ``restored`` just now."""

    tenant: str
    name: str
    stored_hash: str
    computed_hash: str
    newly_found: bool
    restored: bool = False
    #: the instances running the version (not retired): every decision of theirs is denied while it fails
    instances: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.restored:
            return f"hashes to its stored {self.stored_hash} again: integrity OK, its instances are decided again"
        note = "newly found, recorded VERSION_INTEGRITY_FAILED" if self.newly_found else "already marked FAILED"
        denied = f"; every decision of its instances is denied: {', '.join(self.instances)}" if self.instances else ""
        return f"hashes to {self.computed_hash}, stored {self.stored_hash} ({note}){denied}"


#: The name the callers used before restorations were reported.
Tampered = Finding


def check_version(stored: dict[str, object], stored_hash: str) -> str | None:
    """The hash the stored genome has, when it is not ``stored_hash``."""
    computed = genome.genome_hash(stored)
    return None if computed == stored_hash else computed


def verify_genomes(connection: sa.Connection, now: dt.datetime) -> list[Finding]:
    """Every version still altered (``restored`` False) and every one that verified again just
    now (``restored`` True)."""
    v, i = tables.agent_versions, tables.instances
    found = []
    records = []
    for row in connection.execute(
        sa.select(v.c.id, v.c.tenant, v.c.name, v.c.genome, v.c.genome_hash, v.c.integrity).order_by(v.c.id)
    ):
        computed = check_version(row.genome, row.genome_hash)
        if computed is None and row.integrity != "FAILED":
            continue
        running = tuple(
            connection.execute(
                sa.select(i.c.id)
                .where(i.c.tenant == row.tenant, i.c.version == row.name, i.c.state != "RETIRED")
                .order_by(i.c.id)
            ).scalars()
        )
        if computed is None:
            found.append(Finding(row.tenant, row.name, row.genome_hash, row.genome_hash, False, True, running))
            connection.execute(v.update().where(v.c.id == row.id).values(integrity="OK"))
            records.append(
                chain.Record(
                    tenant=row.tenant,
                    type="VERSION_INTEGRITY_VERIFIED",
                    object_kind="AgentVersion",
                    object_name=row.name,
                    before={"integrity": "FAILED"},
                    after={"genomeHash": row.genome_hash, "integrity": "OK"},
                )
            )
            continue
        newly = row.integrity != "FAILED"
        found.append(Finding(row.tenant, row.name, row.genome_hash, computed, newly, False, running))
        if newly:
            connection.execute(v.update().where(v.c.id == row.id).values(integrity="FAILED"))
            records.append(
                chain.Record(
                    tenant=row.tenant,
                    type="VERSION_INTEGRITY_FAILED",
                    object_kind="AgentVersion",
                    object_name=row.name,
                    before={"genomeHash": row.genome_hash, "integrity": row.integrity},
                    after={"computedHash": computed, "integrity": "FAILED", "deniedInstances": list(running)},
                )
            )
    if records:
        chain.append(connection, records, now)
        # The admission gate's inputs and the decider's resolution changed outside Git.
        fleetstate.bump_generation(connection)
    return found
