"""Production's state as a file, for pull-request plans that know the real gates.

``armctl state export --out state.json`` writes what the gates read that Git does not hold:
each version's lifecycle, the approvals (with their ids and decisions) and the recorded
evaluation runs. No secrets: approvals hold subjects, roles, operators and justifications; a
tool call's approval its arguments as stored (redacted). ``armctl plan --base --head --state
state.json`` loads the approvals and runs into its scratch database before it applies the base
(so the base's gates pass as they did in production and keep their approval ids), then sets each
version's lifecycle to production's, and plans the head against that: the waiting gates and
approval ids in the comment are the real ones.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler import errors
from reconciler.evidence import recording
from reconciler.state import fleetstate, tables

__all__ = ["FORMAT", "export", "import_after", "import_before", "read"]

FORMAT = "arm-state/1"

_APPROVAL_COLUMNS = (
    "id", "tenant", "subject_kind", "subject_name", "transition", "required", "approver_roles", "status", "decisions",
    "reason", "requested_sha", "created_at", "expires_at", "decided_at",
)  # fmt: skip
_TIMES = ("created_at", "expires_at", "decided_at")


def export(connection: sa.Connection) -> dict[str, Any]:
    """The state document (see the module docstring)."""
    state = fleetstate.read(connection) or {}
    v, a = tables.agent_versions.c, tables.approvals.c
    lifecycles = [
        {"tenant": r.tenant, "version": r.name, "lifecycle": r.lifecycle}
        for r in connection.execute(
            sa.select(v.tenant, v.name, v.lifecycle).where(v.status == "ACTIVE").order_by(v.tenant, v.name)
        )
    ]
    approvals = []
    for row in connection.execute(sa.select(*(a[c] for c in _APPROVAL_COLUMNS)).order_by(a.id)).mappings():
        approvals.append({k: (val.isoformat() if isinstance(val, dt.datetime) else val) for k, val in row.items()})
    return {
        "format": FORMAT,
        "appliedSha": state.get("applied_sha"),
        "lifecycles": lifecycles,
        "approvals": approvals,
        "evaluations": recording.list_runs(connection, limit=10**9),
    }


def read(path: str) -> dict[str, Any]:
    """A state file, checked for its shape (``errors.ConfigError`` names the file and what is wrong)."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise errors.ConfigError(f"--state {path}: cannot read it: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise errors.ConfigError(f"--state {path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise errors.ConfigError(
            f"--state {path}: not a state file ('format' is not {FORMAT!r}): write it with 'armctl state export'"
        )
    for key in ("lifecycles", "approvals", "evaluations"):
        if not isinstance(doc.get(key), list):
            raise errors.ConfigError(f"--state {path}: field {key} must be a list")
    return doc


def import_before(connection: sa.Connection, doc: dict[str, Any], source: str) -> None:
    """Approvals and evaluation runs into an empty (scratch) database, ids kept."""
    recording.import_runs(connection, doc["evaluations"], f"{source} (evaluations)")
    rows = []
    for index, item in enumerate(doc["approvals"]):
        if not isinstance(item, dict):
            raise errors.ConfigError(f"{source}: approvals[{index}] is not an object")
        try:
            row = {c: item[c] for c in _APPROVAL_COLUMNS}
            for c in _TIMES:
                if row[c] is not None:
                    row[c] = dt.datetime.fromisoformat(row[c])
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.ConfigError(f"{source}: approvals[{index}]: {type(exc).__name__}: {exc}") from exc
        rows.append(row)
    if rows:
        connection.execute(tables.approvals.insert(), rows)
        if connection.dialect.name == "postgresql":  # the next approval the scratch plan requests gets a new id
            connection.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('approvals', 'id'), (SELECT max(id) FROM approvals))")
            )


def import_after(connection: sa.Connection, doc: dict[str, Any]) -> int:
    """Each version's lifecycle as production has it (once the base is applied); how many moved."""
    v = tables.agent_versions
    moved = 0
    for item in doc["lifecycles"]:
        if isinstance(item, dict) and isinstance(item.get("lifecycle"), str):
            moved += connection.execute(
                v.update()
                .where(v.c.tenant == item.get("tenant"), v.c.name == item.get("version"), v.c.lifecycle != item["lifecycle"])
                .values(lifecycle=item["lifecycle"])
            ).rowcount
    return moved
