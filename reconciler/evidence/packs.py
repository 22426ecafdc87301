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
  its chain (by sequence number): ``body`` (the record as its hash covers it: tenant, seq, sha,
  author, operator, type, object, before, after, at; canonical JSON), ``prevHash``, ``hash``
  (``sha256(prevHash + body)``), ``id`` and ``runId``;
- ``approvals.jsonl``;
- ``evaluation-runs.jsonl``: the evaluation runs recorded in the range (version, genome hash,
  suite, metrics, samples, submitter, verdict), each of which must match the hash-chained
  ``EVALUATION_RECORDED`` change record written with it, which the pack also holds;
- ``reconcile-runs.jsonl`` (the commits applied: SHA, author),
  ``op-events.jsonl`` (decisions and runtime events still in the database, redacted);
- ``archives/<name>``: the tenant's op-event archives of the range, byte for byte as written
  (their hashes are listed in the signed checkpoints).

Every ``.jsonl`` line is one JSON object: ``packHash`` first, then the record's fields (keys
sorted). ``packHash`` is ``sha256(previous line's packHash + the record's JSON without it)``
(:func:`line_of`), so a changed, added, removed or reordered record is named by its line,
whatever else the file holds. New kinds of evidence are new files: a section in
``packing.SECTIONS`` (the checker verifies any listed file's hash and line links without knowing
it, and ``unpacking`` adds what it knows of the file's content).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["FORMAT", "GENESIS", "MANIFEST", "SIGNATURE", "line_of", "link", "record_body"]

FORMAT = "arm-audit-pack/1"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
KEYS = "keys.json"
RETENTION = "retention.json"
CHECKPOINTS = "checkpoints.jsonl"
CHANGE_RECORDS = "change-records.jsonl"
APPROVALS = "approvals.jsonl"
EVALUATION_RUNS = "evaluation-runs.jsonl"
RUNS = "reconcile-runs.jsonl"
OP_EVENTS = "op-events.jsonl"
ARCHIVES = "archives/"

#: What the first line of a ``.jsonl`` file links to.
GENESIS = "sha256:" + "0" * 64

_SORTED = orjson.OPT_SORT_KEYS


#: How every ``.jsonl`` line starts: its link comes first, so it is checked without parsing.
_PREFIX = b'{"packHash":"sha256:'
_LINK = len(_PREFIX) + 64  # where the hash ends


def line_of(previous: str, record: dict[str, Any]) -> tuple[bytes, str]:
    """The line (with its newline) that writes ``record`` after ``previous``, and its hash.

    The record is written as JSON with sorted keys (orjson; ``orjson.Fragment`` values go in as
    they are); its hash is ``sha256(previous + that JSON)``, and the line is the same object with
    ``packHash`` put first."""
    body = orjson.dumps(record, option=_SORTED)
    digest = "sha256:" + hashlib.sha256(previous.encode() + body).hexdigest()
    return _PREFIX + digest[7:].encode() + b'",' + body[1:] + b"\n", digest


def link(previous: str, line: bytes) -> tuple[str, str] | None:
    """(the hash a line states, the hash its record gives after ``previous``), or None when it
    is not a pack line (its ``packHash`` not first)."""
    if not line.startswith(_PREFIX) or line[_LINK : _LINK + 2] != b'",' or len(line) < _LINK + 4:
        return None
    digest = hashlib.sha256(previous.encode())
    digest.update(b"{")
    digest.update(memoryview(line)[_LINK + 2 :])
    return "sha256:" + line[len(_PREFIX) : _LINK].decode("ascii", "replace"), "sha256:" + digest.hexdigest()


#: Where a change record's ``body`` starts in its line, and what follows it.
BODY_START = _LINK + 2 + len(b'"body":')
_AFTER_BODY = b',"hash":"sha256:'


def record_body(line: bytes) -> bytes | None:
    """The raw ``body`` of a change record's line (its keys are sorted: ``body`` comes first, and
    ``hash`` right after it, at the line's top level)."""
    if line[_LINK + 2 : BODY_START] != b'"body":':
        return None
    end = line.rfind(_AFTER_BODY)
    return line[BODY_START:end] if end > BODY_START else None
