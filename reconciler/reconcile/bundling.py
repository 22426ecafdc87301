"""The OPA bundle of the applied commit: policies and data any OPA sidecar can pull.

``bundle(connection)`` builds a gzipped tar in OPA's bundle format: ``.manifest`` (revision =
the applied commit SHA, roots ``arm``), the built-in library and the fleet's modules, and
``data.json`` with what decisions need from the tenant's fleet (each version's effective
envelope and the tool catalog, under ``data.arm.fleet``): one bundle per tenant. Bytes are deterministic for a revision
(fixed mtimes, sorted entries), so the SHA doubles as the ETag.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any

import sqlalchemy as sa

from reconciler.policy import library
from reconciler.state import fleetstate, tables

__all__ = ["bundle", "fleet_data"]


def fleet_data(connection: sa.Connection, tenant: str) -> dict[str, Any]:
    """One tenant's data: a bundle never carries another tenant's envelopes or catalog."""
    v, t = tables.agent_versions.c, tables.tool_catalogs.c
    envelopes: dict[str, dict[str, Any]] = {}
    query = sa.select(v.tenant, v.name, v.envelope).where(v.status == "ACTIVE", v.tenant == tenant).order_by(v.name)
    for row in connection.execute(query):
        if row.envelope is not None:
            envelopes.setdefault(row.tenant, {})[row.name] = row.envelope
    tools: dict[str, dict[str, Any]] = {}
    for catalog in connection.execute(
        sa.select(t.tenant, t.spec).where(t.status == "ACTIVE", t.tenant == tenant).order_by(t.name)
    ):
        for entry in catalog.spec.get("tools", []):
            tools.setdefault(catalog.tenant, {})[entry["name"]] = entry
    return {"arm": {"fleet": {"envelopes": envelopes, "tools": tools}}}


def bundle(connection: sa.Connection, tenant: str) -> tuple[bytes, str | None]:
    """(gzipped tar bytes, revision) of the applied commit's policy bundle for one tenant."""
    state = fleetstate.read(connection) or {}
    revision = state.get("applied_sha")
    c = tables.policy_modules.c
    fleet = {row.path: row.text for row in connection.execute(sa.select(c.path, c.text))}
    files: dict[str, bytes] = {
        ".manifest": json.dumps({"revision": revision or "", "roots": ["arm"]}, sort_keys=True).encode(),
        "data.json": json.dumps(fleet_data(connection, tenant), sort_keys=True, separators=(",", ":")).encode(),
    }
    for path, text in library.modules_for(fleet, tests=False).items():
        files[path] = text.encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0), revision
