"""Canonical JSON and genome hashing: the identity of an agent version.

``genomeHash = "sha256:" + sha256(canonical(genome document)).hexdigest()`` where the genome
document is the manifest's ``spec.genome`` with defaults left out (so a new optional field in a
later release does not change existing hashes) and every prompt file replaced by the hash of its
content (so moving a file does not change the hash, editing it does).

Canonical JSON (pinned by ``tests/desired/test_genome.py``; changing it changes every hash):
- object keys sorted by code point, no insignificant whitespace, UTF-8 without escaping;
- integers as written; floats in the shortest form that round-trips, formatted like
  ECMAScript's ``Number.prototype.toString`` (``1.0`` → ``1``, ``1e-05`` → ``0.00001``,
  ``1e21`` → ``1e+21``), as RFC 8785 does; NaN and infinities are refused;
- strings escaped only where JSON requires it (``"``, ``\\``, control characters).

Used by ``loading`` (to hash versions of a commit) and later by the store and audit (to re-hash
what is stored).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.desired import models

__all__ = [
    "canonical_json",
    "content_hash",
    "fill_template",
    "genome_document",
    "genome_hash",
    "genome_template",
    "hash_template",
    "sha256_of",
]

_encode_str = json.encoder.py_encode_basestring  # type: ignore[attr-defined]


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{value!r} has no canonical JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    digits = all_digits.lstrip("0")
    # value = 0.<digits> x 10**point (ECMAScript's n), after dropping leading zeros.
    point = len(int_part) + (int(exp_text) if exp_text else 0) - (len(all_digits) - len(digits))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + digits
    exponent = point - 1
    exp_str = f"e{'+' if exponent > 0 else '-'}{abs(exponent)}"
    if k == 1:
        return sign + digits + exp_str
    return sign + digits[0] + "." + digits[1:] + exp_str


def _emit(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _emit(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} has no canonical JSON form")


#: A number token the C encoder writes differently from ECMAScript: an integral float ("2.0") or
#: one in exponent form ("1e-05"). Strings can contain such text too; then the exact (slower)
#: emitter runs, which is always correct.
_SUSPECT = re.compile(r"(?:^|[\[:,])-?\d+(?:\.0|(?:\.\d+)?e[+-]\d+)(?=[,\]}]|$)")


def _suspect(text: str) -> bool:
    # Substring tests first: they are C-fast and rule out almost every text.
    if ".0," in text or ".0}" in text or ".0]" in text or text.endswith(".0") or "e+" in text or "e-" in text:
        return _SUSPECT.search(text) is not None
    return False


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON encoding of ``value`` (see the module docstring).

    Object keys must be strings: the fast path would write another key as a string, so callers
    pass JSON data (manifests cannot hold other keys: the YAML reader refuses them).
    """
    text = _DUMPS(value)
    if not _suspect(text):
        return text.encode("utf-8")
    out: list[str] = []
    _emit(value, out)
    return "".join(out).encode("utf-8")


_DUMPS = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")).encode


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_hash(data: bytes) -> str:
    """The hash a prompt file is replaced by inside the genome document."""
    return sha256_of(data)


def genome_document(genome: models.Genome, prompt_hashes: Mapping[str, str]) -> dict[str, Any]:
    """The genome as hashed and stored: defaults omitted, prompt files replaced by content hashes.

    ``prompt_hashes`` maps each prompt's ``file`` (as written in the manifest) to its content
    hash; a file missing from it is a ``KeyError`` the loader reports before calling this.
    """
    document = genome.model_dump(mode="json", exclude_defaults=True)
    if genome.prompts:
        document["prompts"] = [
            {
                **({"role": p.role} if p.role != "system" else {}),
                "contentHash": prompt_hashes[p.file],
            }
            for p in genome.prompts
        ]
    return document


def genome_hash(document: Mapping[str, Any]) -> str:
    return sha256_of(canonical_json(document))


def genome_template(genome: models.Genome) -> tuple[str, ...]:
    """The canonical genome text split around its prompt hashes, one gap per prompt.

    Lets the (slow) canonical encoding happen once per document and be cached, while prompt files
    are hashed separately by blob: ``hash_template`` joins the pieces with the content hashes.
    """
    nonce = secrets.token_hex(16)
    markers = [f"arm-prompt-{nonce}-{i}" for i in range(len(genome.prompts))]
    document = genome.model_dump(mode="json", exclude_defaults=True)
    if genome.prompts:
        document["prompts"] = [
            {**({"role": p.role} if p.role != "system" else {}), "contentHash": markers[i]} for i, p in enumerate(genome.prompts)
        ]
    text = canonical_json(document).decode("utf-8")
    pieces = []
    for marker in markers:
        head, _, text = text.partition(f'"{marker}"')
        pieces.append(head)
    pieces.append(text)
    return tuple(pieces)


def fill_template(template: tuple[str, ...], prompt_hashes: list[str]) -> bytes:
    """The canonical genome text of a ``genome_template`` given each prompt's content hash."""
    if len(prompt_hashes) != len(template) - 1:
        raise ValueError(f"the genome has {len(template) - 1} prompts, got {len(prompt_hashes)} hashes")
    parts = [template[0]]
    for digest, piece in zip(prompt_hashes, template[1:], strict=True):
        parts.append(f'"{digest}"')
        parts.append(piece)
    return "".join(parts).encode("utf-8")


def hash_template(template: tuple[str, ...], prompt_hashes: list[str]) -> str:
    """The genome hash of a ``genome_template`` given each prompt's content hash, in order."""
    return sha256_of(fill_template(template, prompt_hashes))
