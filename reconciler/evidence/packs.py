"""The audit pack's format, shared by its writer (``evidence.packing``) and its offline checker
(``evidence.unpacking``).

A pack is a gzipped tar. Its first member is ``manifest.json``: the tenant, the range, when and
by what it was made, the key that signed it, and every other file in order with its SHA-256,
size and number of records. The second is ``signature.json``: an Ed25519 signature (``EdDSA``)
over the exact bytes of ``manifest.json``, with the signing key's id. The files follow in the
manifest's order:

- ``keys.json``: the public keys (every key that signed a checkpoint or this pack);
- ``retention.json``: the retention in force when it was made;
- ``checkpoints.jsonl``: the tenant's signed chain checkpoints, all of them;
- ``change-records.jsonl``: the tenant's change records of the range, a contiguous stretch of
  its chain (by sequence number), each with ``prevHash`` and ``hash``;
- ``approvals.jsonl``, ``reconcile-runs.jsonl`` (the commits applied: SHA, author),
  ``op-events.jsonl`` (decisions and runtime events still in the database, redacted);
- ``archives/<name>``: the tenant's op-event archives of the range, byte for byte as written
  (their hashes are listed in the signed checkpoints).

Every ``.jsonl`` line is one JSON object (keys sorted) with a ``packHash`` linking it to the line
before (:func:`line_hash`), so a changed, added, removed or reordered record is named by its
line, whatever else the file holds. New kinds of evidence are new files: a section in
``packing.SECTIONS`` (the checker verifies any listed file's hash and line links without knowing
it, and ``unpacking`` adds what it knows of the file's content).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["FORMAT", "GENESIS", "MANIFEST", "SIGNATURE", "line_hash", "line_of"]

FORMAT = "arm-audit-pack/1"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
KEYS = "keys.json"
RETENTION = "retention.json"
CHECKPOINTS = "checkpoints.jsonl"
CHANGE_RECORDS = "change-records.jsonl"
APPROVALS = "approvals.jsonl"
RUNS = "reconcile-runs.jsonl"
OP_EVENTS = "op-events.jsonl"
ARCHIVES = "archives/"

#: What the first line of a ``.jsonl`` file links to.
GENESIS = "sha256:" + "0" * 64

_SORTED = orjson.OPT_SORT_KEYS


def line_hash(previous: str, record: dict[str, Any]) -> str:
    """``sha256(previous + the record's sorted-key JSON)``: the link of one ``.jsonl`` line."""
    return "sha256:" + hashlib.sha256(previous.encode() + orjson.dumps(record, option=_SORTED)).hexdigest()


def line_of(previous: str, record: dict[str, Any]) -> tuple[bytes, str]:
    """The line (with its newline) that writes ``record`` after ``previous``, and its hash."""
    digest = line_hash(previous, record)
    return orjson.dumps({**record, "packHash": digest}, option=_SORTED) + b"\n", digest
