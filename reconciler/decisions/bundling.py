"""The applied commit's policy as engines and OPA sidecars load it: modules, data, revision.

:func:`fleet_data` is the one source of the policy's data: what decisions need from the fleet
(each version's effective envelope as the decision input carries it, budgets in micro-units, and
the tool catalog, keyed by tenant, under ``data.arm.fleet``). The decider's engine loads every tenant's (``decisions.deciding``; an OPA
engine gets it pushed); a tenant's bundle and the Data API carry that tenant's alone, so a fleet
rule that reads its own tenant's entries (``data.arm.fleet.envelopes[input.instance.tenant]``)
decides alike everywhere, and no tenant sees another's.

:func:`bundle` builds a gzipped tar in OPA's bundle format: ``.manifest`` (revision = the applied
commit SHA, roots ``arm``), the built-in library and the fleet's modules, ``data.json``, and with a
signing key ``.signatures.json`` in OPA's bundle-signing format (``evidence.opasigning``; scope:
the tenant), which sidecars verify. Bytes are deterministic for a revision and key (fixed mtimes,
sorted entries, Ed25519 signatures are deterministic), so the SHA and key id make the ETag.
:class:`TenantEngines` evaluates a tenant's bundle in process: what the server's Data API answers,
the same as that tenant's sidecars.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import threading
from typing import Any

import sqlalchemy as sa

from reconciler.evidence import keys, opasigning
from reconciler.policy import engines, library
from reconciler.policy import envelopes as policy_envelopes
from reconciler.state import fleetstate, tables

__all__ = ["TenantEngines", "bundle", "fleet_data", "policy"]


def fleet_data(connection: sa.Connection, tenant: str | None = None) -> dict[str, Any]:
    """The policy's data, of one tenant or (None) of every tenant:
    ``{"arm": {"fleet": {"envelopes": {tenant: {version: envelope}}, "tools": {tenant: {tool: entry}},
    "integrityFailed": {tenant: {version: true}}}}}`` — the last naming the versions whose stored
    genome failed verification, whose instances the decision denies (``VERSION_INTEGRITY_FAILED``)
    wherever the policy runs."""
    v, t = tables.agent_versions.c, tables.tool_catalogs.c
    versions = sa.select(v.tenant, v.name, v.envelope).where(v.status == "ACTIVE").order_by(v.tenant, v.name)
    catalogs = sa.select(t.tenant, t.spec).where(t.status == "ACTIVE").order_by(t.tenant, t.name)
    if tenant is not None:
        versions, catalogs = versions.where(v.tenant == tenant), catalogs.where(t.tenant == tenant)
    envelopes: dict[str, dict[str, Any]] = {}
    for row in connection.execute(versions):
        if row.envelope is not None:
            envelopes.setdefault(row.tenant, {})[row.name] = policy_envelopes.for_policy(row.envelope)
    tools: dict[str, dict[str, Any]] = {}
    for catalog in connection.execute(catalogs):
        for entry in catalog.spec.get("tools", []):
            tools.setdefault(catalog.tenant, {})[entry["name"]] = entry
    failed: dict[str, dict[str, bool]] = {}
    query = sa.select(v.tenant, v.name).where(v.status == "ACTIVE", v.integrity == "FAILED")
    for broken in connection.execute(query.where(v.tenant == tenant) if tenant is not None else query):
        failed.setdefault(broken.tenant, {})[broken.name] = True
    return {"arm": {"fleet": {"envelopes": envelopes, "tools": tools, "integrityFailed": failed}}}


def policy(
    connection: sa.Connection, tenant: str | None, *, revision: str | None = None, data_if_read: bool = False
) -> engines.Bundle:
    """The applied commit's policy: the library and the fleet's modules (tests left out), the data
    of ``tenant`` (None: every tenant), and ``revision`` (default: the applied SHA, "" before any
    apply). ``data_if_read``: no data unless a fleet module refers to the data document — on
    10,000 versions it is ~6 MB of JSON that every thread's engine parses (~0.15 s) first."""
    c = tables.policy_modules.c
    fleet = {row.path: row.text for row in connection.execute(sa.select(c.path, c.text))}
    if revision is None:
        revision = (fleetstate.read(connection) or {}).get("applied_sha") or ""
    modules = library.modules_for(fleet, tests=False)
    reads = not data_if_read or any(_READS_DATA.search(text) for path, text in fleet.items() if not path.endswith("_test.rego"))
    return engines.Bundle(modules, fleet_data(connection, tenant) if reads else {}, revision)


#: A reference to the data document other than the library's own packages: ``data.arm.fleet...``,
#: ``data["arm"]``, ``import data.arm.fleet``.
_READS_DATA = re.compile(r"\bdata\b(?!\s*\.\s*arm\s*\.\s*(?:decision|ext)\b)")


def bundle(connection: sa.Connection, tenant: str, signer: keys.Signer | None = None) -> tuple[bytes, str | None]:
    """(gzipped tar bytes, revision) of the applied commit's policy bundle for one tenant; with a
    ``signer``, signed in OPA's format (``.signatures.json``, scope = the tenant)."""
    contents = policy(connection, tenant)
    files: dict[str, bytes] = {
        ".manifest": json.dumps({"revision": contents.revision, "roots": ["arm"]}, sort_keys=True).encode(),
        "data.json": json.dumps(contents.data, sort_keys=True, separators=(",", ":")).encode(),
    }
    for path, text in contents.modules.items():
        files[path] = text.encode()
    if signer is not None:
        files[opasigning.SIGNATURES_FILE] = opasigning.signatures(files, signer, scope=tenant)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0), contents.revision or None


class TenantEngines:
    """Per tenant, an embedded engine loaded with that tenant's bundle, reloaded when a commit is
    applied (the applied SHA or time changes) or the state generation moves (a version's integrity
    found failed, or restored): the modules and data are read once per change and tenant, not
    per query."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[tuple[Any, ...], engines.EmbeddedEngine]] = {}

    def engine(self, connection: sa.Connection, tenant: str) -> engines.EmbeddedEngine:
        state = fleetstate.read(connection) or {}
        # The generation moves with what changes outside Git, a version's integrity among it.
        key = (state.get("applied_sha"), state.get("applied_at"), state.get("generation"))
        loaded = self._loaded.get(tenant)
        if loaded is not None and loaded[0] == key:
            return loaded[1]
        with self._lock:
            loaded = self._loaded.get(tenant)
            if loaded is None or loaded[0] != key:
                engine = engines.EmbeddedEngine()
                engine.load(policy(connection, tenant))
                loaded = self._loaded[tenant] = (key, engine)
        return loaded[1]
