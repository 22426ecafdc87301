"""Integrity: re-hash stored genomes, mark the versions whose genome was altered and clear the
mark when the genome verifies again; check that evaluation runs still say what was recorded.

A version's stored genome must hash to its stored ``genome_hash``. ``verify_genomes`` checks
them all (``armctl audit verify``, and the daemon every ``ARM_CHECKPOINT_INTERVAL_SECONDS``), or
one version's (a scorecard's detail read). A mismatch sets ``integrity = 'FAILED'`` and writes
``VERSION_INTEGRITY_FAILED`` once, when first found: the admission gate then refuses to deploy the
version, and the decider denies every decision of its instances (reason
``VERSION_INTEGRITY_FAILED``). A FAILED version whose genome hashes right again (restored) is set
back to ``OK`` with ``VERSION_INTEGRITY_VERIFIED``. Either change bumps the state generation, so
the decider's cached resolution is rebuilt at once. ``verify_runs`` compares every evaluation run
with the hash-chained ``EVALUATION_RECORDED`` record written with it: evidence changed behind the
store's back is found there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.desired import genome
from reconciler.state import fleetstate, tables

__all__ = ["AlteredRun", "Finding", "Tampered", "check_version", "verify_genomes", "verify_runs"]


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


def verify_genomes(
    connection: sa.Connection, now: dt.datetime, *, tenant: str | None = None, name: str | None = None
) -> list[Finding]:
    """Re-hash stored genomes (every one, or one version's: a detail read re-hashes the genome it
    shows): every version still altered (``restored`` False) and every one that verified again just
    now (``restored`` True), each recorded the first time it is found."""
    v, i = tables.agent_versions, tables.instances
    found = []
    records = []
    query = sa.select(v.c.id, v.c.tenant, v.c.name, v.c.genome, v.c.genome_hash, v.c.integrity).order_by(v.c.id)
    if tenant is not None:
        query = query.where(v.c.tenant == tenant)
    if name is not None:
        query = query.where(v.c.name == name)
    for row in connection.execute(query):
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


@dataclasses.dataclass(frozen=True)
class AlteredRun:
    tenant: str
    run: int
    reason: str


#: What an evaluation run's EVALUATION_RECORDED record repeats of it: record key → run column.
_RUN_FIELDS = {"genomeHash": "genome_hash", "suite": "suite", "metrics": "metrics", "samples": "samples"}


def verify_runs(connection: sa.Connection) -> list[AlteredRun]:
    """Every evaluation run that no longer matches the change record written with it (or has
    none): the store refuses to update or delete runs, and this finds what went around it."""
    c = tables.change_records.c
    recorded: dict[tuple[str, int], tuple[str, dict[str, object]]] = {}
    query = sa.select(c.tenant, c.object_name, c.after).where(c.type == "EVALUATION_RECORDED")
    for row in connection.execute(query):
        after = row.after or {}
        if isinstance(after.get("run"), int):
            recorded[(row.tenant, after["run"])] = (row.object_name, after)
    r = tables.evaluation_runs.c
    altered = []
    seen = set()
    for run in connection.execute(sa.select(r.id, r.tenant, r.version, *(r[col] for col in _RUN_FIELDS.values())).order_by(r.id)):
        seen.add((run.tenant, run.id))
        found = recorded.get((run.tenant, run.id))
        if found is None:
            altered.append(AlteredRun(run.tenant, run.id, "no EVALUATION_RECORDED change record names it"))
            continue
        version, after = found
        changed = [key for key, column in _RUN_FIELDS.items() if after.get(key) != getattr(run, column)]
        if version != run.version:
            changed.insert(0, "version")
        if changed:
            altered.append(AlteredRun(run.tenant, run.id, f"differs from its EVALUATION_RECORDED record in {', '.join(changed)}"))
    for tenant, run_id in sorted(set(recorded) - seen):
        altered.append(AlteredRun(tenant, run_id, "recorded by EVALUATION_RECORDED but missing from the store"))
    return altered
