"""The OPA bundle of the applied commit: policies and data any OPA sidecar can pull.

``bundle(connection)`` builds a gzipped tar in OPA's bundle format: ``.manifest`` (revision =
the applied commit SHA, roots ``arm``), the built-in library and the fleet's modules, and
``data.json`` with what decisions need from the fleet (each version's effective envelope and
each tenant's tool catalog, under ``data.arm.fleet``). Bytes are deterministic for a revision
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


def fleet_data(connection: sa.Connection) -> dict[str, Any]:
    v, t = tables.agent_versions.c, tables.tool_catalogs.c
    envelopes: dict[str, dict[str, Any]] = {}
    for row in connection.execute(sa.select(v.tenant, v.name, v.envelope).where(v.status == "ACTIVE").order_by(v.tenant, v.name)):
        if row.envelope is not None:
            envelopes.setdefault(row.tenant, {})[row.name] = row.envelope
    tools: dict[str, dict[str, Any]] = {}
    for catalog in connection.execute(sa.select(t.tenant, t.spec).where(t.status == "ACTIVE").order_by(t.tenant, t.name)):
        for entry in catalog.spec.get("tools", []):
            tools.setdefault(catalog.tenant, {})[entry["name"]] = entry
    return {"arm": {"fleet": {"envelopes": envelopes, "tools": tools}}}


def bundle(connection: sa.Connection) -> tuple[bytes, str | None]:
    """(gzipped tar bytes, revision) of the applied commit's policy bundle."""
    state = fleetstate.read(connection) or {}
    revision = state.get("applied_sha")
    c = tables.policy_modules.c
    fleet = {row.path: row.text for row in connection.execute(sa.select(c.path, c.text))}
    files: dict[str, bytes] = {
        ".manifest": json.dumps({"revision": revision or "", "roots": ["arm"]}, sort_keys=True).encode(),
        "data.json": json.dumps(fleet_data(connection), sort_keys=True, separators=(",", ":")).encode(),
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
