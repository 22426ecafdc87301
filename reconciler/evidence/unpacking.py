"""Verifying an audit pack offline, with nothing but the pack and a public key.

``armctl audit verify-pack PACK [--key PUBKEY]`` calls :func:`verify_pack`. It reads the pack as
a stream (nothing is extracted to disk; any size is read in bounded memory) and reports every
problem it finds, each naming the file and, where there is one, the line and the record:

1. The manifest's signature, by ``--key`` when given (else by the key the pack names, from its
   own ``keys.json``, which proves integrity but not origin: the report says which).
2. The files: exactly the manifest's, in its order, each with its SHA-256 and size — a changed,
   added, removed or reordered file is named.
3. Every ``.jsonl`` line's ``packHash`` link: a changed, added, removed or reordered record is
   named by its line. Records belong to the pack's tenant; op events come in id order.
4. The change records: a contiguous stretch of the chain (the manifest's ``chain``), each hash
   recomputed (``sha256(prevHash + body)``, over the body as written), each linked to the one
   before.
5. The checkpoints (``evidence.checkpoints.verify_rows``): numbered without a gap, linked, hashes
   and signatures by keys the pack carries (vouched for by the signed manifest), and every record
   of the stretch they anchor holding the hash they state. A store that edited records and
   re-hashed the chain without the key fails here: the checkpoints signed before the edit
   anchor the old hashes. A checkpoint signed within the range that anchors a record past the
   stretch means the newest records were cut off.
6. Archives: each one is listed, with the same hash, in a checkpoint; its events are the tenant's.
7. Evaluation runs: each one matches (version, genome hash, suite, metrics, samples) the
   ``EVALUATION_RECORDED`` change record of the pack's chain that was written with it, so a run
   the store altered before the export (behind its append-only guard) is named, as ``armctl audit
   verify`` names it in the database.

Works with ``evidence.packs`` (the format) and ``evidence.keys``; no database.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from reconciler import errors
from reconciler.evidence import checkpoints, packs
from reconciler.evidence import keys as keys_

__all__ = ["Problem", "Report", "verify_pack"]

#: Bounds on what an untrusted pack may make the checker hold in memory at once.
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_LINE_BYTES = 64 * 2**20
MAX_MEMBERS = 1_000_000
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Problem:
    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclasses.dataclass
class Report:
    pack: str
    problems: list[Problem] = dataclasses.field(default_factory=list)
    tenant: str | None = None
    since: str | None = None
    until: str | None = None
    created_at: str | None = None
    kid: str | None = None
    key: str = "none"  # given (--key) | pack (the pack's own keys.json) | none
    files: int = 0
    records: dict[str, int] = dataclasses.field(default_factory=dict)
    checkpoints: int = 0
    chain: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(file, message, line))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "pack": self.pack, "tenant": self.tenant, "since": self.since, "until": self.until,
            "createdAt": self.created_at, "signedBy": self.kid, "key": self.key, "files": self.files,
            "records": self.records, "checkpoints": self.checkpoints, "chain": self.chain,
            "problems": [p.as_dict() for p in self.problems],
        }  # fmt: skip


class _State:
    """What the checker learns as the files stream past."""

    def __init__(self, report: Report, key: keys_.PublicKey | None) -> None:
        self.report = report
        self.given = key
        self.manifest: dict[str, Any] = {}
        self.manifest_bytes = b""
        self.signature: dict[str, Any] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.keys: dict[str, keys_.PublicKey] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.anchored: set[int] = set()
        self.hashes: dict[int, str] = {}  # seq → hash of the records the checkpoints anchor
        self.first_prev: str | None = None
        self.seqs: tuple[int, int] | None = None  # first and last record seen
        #: run id → what its EVALUATION_RECORDED change record says of it
        self.recorded_runs: dict[int, dict[str, Any]] = {}
        self.signature_checked = False


def verify_pack(path: Path, key: keys_.PublicKey | None = None) -> Report:
    """Verify the pack at ``path`` (see the module docstring); ``key`` pins the signer."""
    report = Report(str(path))
    if not path.is_file():
        raise errors.NotFound(f"no audit pack at {path}")
    state = _State(report, key)
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            _read(tar, state)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        report.add(path.name, f"not a readable gzipped tar ({type(exc).__name__}: {exc}): truncated or not an audit pack")
    if state.manifest:
        seen = set(state.order)
        for name in state.entries:
            if name not in seen:
                report.add(name, "listed in the manifest but not in the pack (removed)")
        _check_chain(state)
    return report


def _read(tar: tarfile.TarFile, state: _State) -> None:
    report = state.report
    position = 0
    expected: list[str] = []
    for index, member in enumerate(tar):
        if index >= MAX_MEMBERS:
            report.add(member.name, f"more than {MAX_MEMBERS} files: not an audit pack")
            return
        if not member.isfile():
            report.add(member.name, "not a regular file (links and directories have no place in a pack)")
            continue
        stream = tar.extractfile(member)
        assert stream is not None
        if index == 0:
            if member.name != packs.MANIFEST:
                report.add(member.name, f"the pack must start with {packs.MANIFEST}")
                return
            if not _manifest(stream, member.size, state):
                return
            expected = [entry["name"] for entry in state.manifest["files"]]
            continue
        if index == 1:
            if member.name != packs.SIGNATURE:
                report.add(member.name, f"{packs.SIGNATURE} must follow the manifest")
                return
            _signature(stream, member.size, state)
            continue
        name = member.name
        state.order.append(name)
        entry = state.entries.get(name)
        if entry is None:
            report.add(name, "not listed in the manifest (added)")
            continue
        if position < len(expected) and expected[position] != name:
            report.add(name, f"out of place: the manifest puts {expected[position]} here (reordered)")
        position += 1
        _member(name, stream, entry, state)
    if not state.manifest:
        report.add(packs.MANIFEST, "missing: the pack is empty")


def _manifest(stream: IO[bytes], size: int, state: _State) -> bool:
    report = state.report
    if size > MAX_MANIFEST_BYTES:
        report.add(packs.MANIFEST, f"larger than {MAX_MANIFEST_BYTES} bytes")
        return False
    data = stream.read()
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.add(packs.MANIFEST, f"not JSON: {exc}")
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != packs.FORMAT:
        report.add(packs.MANIFEST, f"not an audit pack manifest (format must be {packs.FORMAT})")
        return False
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in files):
        report.add(packs.MANIFEST, "its files list is malformed")
        return False
    state.manifest, state.manifest_bytes = manifest, data
    state.entries = {f["name"]: f for f in files}
    report.tenant, report.since, report.until = manifest.get("tenant"), manifest.get("since"), manifest.get("until")
    report.created_at, report.files = manifest.get("createdAt"), len(files)
    return True


def _signature(stream: IO[bytes], size: int, state: _State) -> None:
    if size > MAX_MANIFEST_BYTES:
        state.report.add(packs.SIGNATURE, "too large")
        return
    try:
        signature = json.loads(stream.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        state.report.add(packs.SIGNATURE, f"not JSON: {exc}")
        return
    state.signature = signature if isinstance(signature, dict) else {}
    state.report.kid = state.signature.get("kid")
    if state.given is not None:
        _check_signature(state, state.given, "given")


def _check_signature(state: _State, key: keys_.PublicKey, source: str) -> None:
    report, signature = state.report, state.signature
    state.signature_checked = True
    report.key = source
    if signature.get("algorithm") != keys_.ALGORITHM:
        report.add(packs.SIGNATURE, f"algorithm {signature.get('algorithm')!r} is not {keys_.ALGORITHM}")
        return
    if signature.get("kid") != key.kid:
        report.add(packs.SIGNATURE, f"signed by key {signature.get('kid')}, not by the key given ({key.kid})")
        return
    try:
        raw = base64.b64decode(str(signature.get("signature")), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not key.verify(raw, state.manifest_bytes):
        report.add(packs.MANIFEST, f"the signature by key {key.kid} does not verify: the manifest was changed or re-signed")


def _member(name: str, stream: IO[bytes], entry: Mapping[str, Any], state: _State) -> None:
    digest, size = hashlib.sha256(), 0
    is_jsonl = name.endswith(".jsonl")
    lines = _Lines(name, state) if is_jsonl else None
    whole = bytearray() if name in (packs.KEYS, packs.RETENTION) else None
    archive = _Archive(name, state) if name.startswith(packs.ARCHIVES) else None
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if lines is not None:
            lines.feed(chunk)
        if whole is not None and len(whole) <= MAX_MANIFEST_BYTES:
            whole += chunk
        if archive is not None:
            archive.feed(chunk)
    if lines is not None:
        lines.close()
        state.report.records[name] = lines.count
        if entry.get("records") is not None and entry.get("records") != lines.count:
            state.report.add(name, f"holds {lines.count} records, the manifest says {entry.get('records')}")
    if archive is not None:
        archive.close(digest.hexdigest())
    if digest.hexdigest() != entry.get("sha256") or size != entry.get("bytes"):
        state.report.add(
            name, f"changed: its SHA-256 is {digest.hexdigest()} ({size} bytes), the manifest says {entry.get('sha256')}"
        )
    if name == packs.KEYS and whole is not None:
        _keys(bytes(whole), state)


def _keys(data: bytes, state: _State) -> None:
    try:
        listed = json.loads(data).get("keys", [])
        state.keys = {k.kid: k for k in (keys_.parse_public(item["publicKey"]) for item in listed)}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, errors.ConfigError) as exc:
        state.report.add(packs.KEYS, f"not a list of public keys: {exc}")
    if state.given is not None:
        state.keys[state.given.kid] = state.given
    elif state.signature:
        key = state.keys.get(str(state.signature.get("kid")))
        if key is None:
            state.report.add(packs.SIGNATURE, f"signed by key {state.signature.get('kid')}, which the pack does not carry")
        else:
            _check_signature(state, key, "pack")


class _Lines:
    """A ``.jsonl`` file, line by line: its links and what each kind of record must hold."""

    def __init__(self, name: str, state: _State) -> None:
        self.name, self.state = name, state
        self.rest = b""
        self.count = 0
        self.previous = packs.GENESIS
        self.last_id = 0
        self.chain_previous: str | None = None
        self.chain_seq: int | None = None
        self.tenant = state.manifest.get("tenant")
        self.check = {
            packs.CHECKPOINTS: self.checkpoint,
            packs.CHANGE_RECORDS: self.change_record,
            packs.OP_EVENTS: self.op_event,
            packs.APPROVALS: self.approval,
            packs.EVALUATION_RUNS: self.evaluation_run,
        }.get(name)

    def feed(self, chunk: bytes) -> None:
        data = self.rest + chunk
        *complete, self.rest = data.split(b"\n")
        if len(self.rest) > MAX_LINE_BYTES:
            self.state.report.add(self.name, f"a line longer than {MAX_LINE_BYTES} bytes", self.count + 1)
            self.rest = b""
        line = self.line
        for raw in complete:
            line(raw)

    def close(self) -> None:
        if self.rest:
            self.state.report.add(self.name, "the last line is not terminated (cut off)", self.count + 1)

    def line(self, raw: bytes) -> None:
        self.count += 1
        linked = packs.link(self.previous, raw)
        if linked is None:
            record = self.parse(raw)
            label = _label(self.name, record) if record is not None else "the record"
            self.state.report.add(
                self.name, f"{label} is not in a pack's form (its packHash must come first): changed", self.count
            )
            if record is not None and isinstance(record.get("packHash"), str):
                self.previous = record["packHash"]  # so the next line is judged on its own
            return
        stated, computed = linked
        if computed != stated:
            record = self.parse(raw)
            label = _label(self.name, record) if record is not None else "the record"
            self.state.report.add(
                self.name, f"{label} does not link to the line before: changed, added, removed or reordered", self.count
            )
        self.previous = stated
        if self.check is not None:
            record = self.parse(raw)
            if record is not None:
                if self.check == self.change_record:
                    self.change_record(record, self.count, raw)
                else:
                    self.check(record, self.count)

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.state.report.add(self.name, f"not JSON: {exc}", self.count)
            return None
        if not isinstance(record, dict):
            self.state.report.add(self.name, "not a JSON object", self.count)
            return None
        return record

    def owned(self, record: dict[str, Any], number: int) -> bool:
        if record.get("tenant") == self.tenant:
            return True
        self.state.report.add(
            self.name, f"{_label(self.name, record)} belongs to tenant {record.get('tenant')!r}, not {self.tenant!r}", number
        )
        return False

    def checkpoint(self, record: dict[str, Any], number: int) -> None:
        self.owned(record, number)
        record.pop("packHash", None)
        self.state.checkpoints.append(record)
        if isinstance(record.get("seq"), int):
            self.state.anchored.add(record["seq"])

    def approval(self, record: dict[str, Any], number: int) -> None:
        self.owned(record, number)

    def evaluation_run(self, record: dict[str, Any], number: int) -> None:
        if not self.owned(record, number):
            return
        run = record.get("id")
        recorded = self.state.recorded_runs.get(run) if isinstance(run, int) else None
        if recorded is None:
            self.state.report.add(
                self.name, f"evaluation run {run}: no EVALUATION_RECORDED change record of the pack vouches for it", number
            )
            return
        changed = [key for key, value in recorded.items() if record.get(key) != value]
        if changed:
            self.state.report.add(
                self.name,
                f"evaluation run {run} differs from its EVALUATION_RECORDED record in {', '.join(changed)} (altered)",
                number,
            )

    def op_event(self, record: dict[str, Any], number: int) -> None:
        if record.get("tenant") != self.tenant:
            self.owned(record, number)
        event_id = record.get("id")
        if not isinstance(event_id, int) or event_id <= self.last_id:
            self.state.report.add(self.name, f"event {event_id} comes after event {self.last_id}: out of order", number)
        else:
            self.last_id = event_id

    def change_record(self, record: dict[str, Any], number: int, raw: bytes = b"") -> None:
        report, state = self.state.report, self.state
        hashed = record.get("body")
        seq = hashed.get("seq") if isinstance(hashed, dict) else None
        stated, prev, body = record.get("hash"), record.get("prevHash"), packs.record_body(raw)
        if not isinstance(seq, int) or not isinstance(stated, str) or not isinstance(prev, str) or body is None:
            report.add(self.name, "not a change record (body, hash, prevHash)", number)
            return
        assert isinstance(hashed, dict)
        if hashed.get("tenant") != self.tenant:
            self.owned(hashed, number)
        if self.chain_seq is None:
            state.first_prev = prev
            expected_seq = (state.manifest.get("chain") or {}).get("fromSeq", seq)
            first = seq
        else:
            expected_seq = self.chain_seq + 1
            first = state.seqs[0] if state.seqs else seq
            if prev != self.chain_previous:
                report.add(
                    self.name,
                    f"record {seq}: prevHash does not link to record {self.chain_seq} (removed, added or reordered)",
                    number,
                )
        if seq != expected_seq:
            report.add(
                self.name, f"record {seq} where record {expected_seq} belongs: the chain has a gap or is reordered", number
            )
        if "sha256:" + hashlib.sha256(prev.encode() + body).hexdigest() != stated:
            report.add(self.name, f"record {seq}: its hash does not match its content (altered)", number)
        if seq in state.anchored:
            state.hashes[seq] = stated
        if hashed.get("type") == "EVALUATION_RECORDED" and isinstance(hashed.get("after"), dict):
            after, about = hashed["after"], hashed.get("object")
            if isinstance(after.get("run"), int):
                state.recorded_runs[after["run"]] = {
                    "version": about.get("name") if isinstance(about, dict) else None,
                    **{key: after.get(key) for key in ("genomeHash", "suite", "metrics", "samples")},
                }
        self.chain_previous, self.chain_seq = stated, seq
        state.seqs = (first, seq)


def _label(name: str, record: Mapping[str, Any]) -> str:
    if name == packs.CHANGE_RECORDS:
        hashed = record.get("body")
        return f"record {hashed.get('seq') if isinstance(hashed, dict) else record.get('seq')}"
    if name == packs.CHECKPOINTS:
        return f"checkpoint {record.get('number')}"
    if name == packs.OP_EVENTS:
        return f"event {record.get('id')}"
    if name == packs.EVALUATION_RUNS:
        return f"evaluation run {record.get('id')}"
    return f"record {record.get('id', '?')}"


class _Archive:
    """An op-event archive in the pack: its events (gzipped JSON Lines) are the tenant's."""

    def __init__(self, name: str, state: _State) -> None:
        self.name, self.state = name, state
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.rest = b""
        self.events = 0
        self.broken = False

    def feed(self, chunk: bytes) -> None:
        if self.broken:
            return
        try:
            data = self.rest + self.inflate.decompress(chunk)
        except zlib.error as exc:
            self.state.report.add(self.name, f"not gzip: {exc}")
            self.broken = True
            return
        *lines, self.rest = data.split(b"\n")
        if len(self.rest) > MAX_LINE_BYTES:
            self.state.report.add(self.name, "a line too long")
            self.broken = True
            return
        for line in lines:
            self.events += 1
            try:
                tenant = orjson.loads(line).get("tenant")
            except (orjson.JSONDecodeError, AttributeError):
                tenant = None
            if tenant != self.state.manifest.get("tenant"):
                self.state.report.add(self.name, f"event {self.events} is not of tenant {self.state.manifest.get('tenant')!r}")
                self.broken = True
                return

    def close(self, digest: str) -> None:
        archive = self.name[len(packs.ARCHIVES) :]
        listed = [
            (cp.get("number"), a) for cp in self.state.checkpoints for a in cp.get("archives") or [] if a.get("name") == archive
        ]
        if not listed:
            self.state.report.add(self.name, "not listed in any checkpoint of the pack: nothing vouches for it")
        elif all(a.get("sha256") != digest for _, a in listed):
            number = listed[-1][0]
            self.state.report.add(self.name, f"does not match the hash checkpoint {number} lists (altered)")
        elif not self.broken and any(a.get("events") != self.events for _, a in listed):
            self.state.report.add(self.name, f"holds {self.events} events, its checkpoint lists another count")


def _check_chain(state: _State) -> None:
    report = state.report
    if not state.signature_checked:
        report.add(packs.SIGNATURE, "the manifest's signature could not be checked (no key)")
    span = state.manifest.get("chain") or {}
    from_seq, to_seq = span.get("fromSeq"), span.get("toSeq")
    if not isinstance(from_seq, int) or not isinstance(to_seq, int):
        report.add(packs.MANIFEST, "no chain range (fromSeq, toSeq)")
        return
    report.chain = {"fromSeq": from_seq, "toSeq": to_seq}
    seen_first, seen_last = state.seqs if state.seqs else (None, None)
    if from_seq <= to_seq and (seen_first, seen_last) != (from_seq, to_seq):
        got = f"records {seen_first} to {seen_last}" if state.seqs else "no records"
        report.add(packs.CHANGE_RECORDS, f"holds {got}; the manifest says records {from_seq} to {to_seq}")
    hashes = dict(state.hashes)
    first = from_seq
    if state.seqs and state.first_prev is not None and from_seq > 1:
        hashes[from_seq - 1] = state.first_prev
    if not state.seqs:
        first = to_seq + 2  # nothing of the chain to compare: only a cut-off tail can be seen
    cps = sorted(state.checkpoints, key=lambda c: c.get("number", 0) if isinstance(c.get("number"), int) else 0)
    report.checkpoints = len(cps)
    try:
        breaks = list(
            checkpoints.verify_rows(
                str(state.manifest.get("tenant")), cps, hashes, to_seq, state.keys, first=first, until=state.manifest.get("until")
            )
        )
    except (KeyError, TypeError, AttributeError) as exc:
        report.add(packs.CHECKPOINTS, f"malformed checkpoint: {type(exc).__name__}: {exc}")
        return
    for found in breaks:
        where = f"checkpoint {found.checkpoint}" if found.checkpoint is not None else "checkpoints"
        file = packs.CHANGE_RECORDS if "truncated" in found.reason or "rewritten" in found.reason else packs.CHECKPOINTS
        report.add(file, f"{where}: {found.reason}")
