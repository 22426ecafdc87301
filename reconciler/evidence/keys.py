"""Signing keys: the Ed25519 keys that sign chain checkpoints, audit packs and OPA bundles.

Where the key a process signs with comes from, in order:

1. ``ARM_SIGNING_KEY_FILE``: the organisation's own key (bring your own), a PKCS#8 PEM Ed25519
   private key (``openssl genpkey -algorithm ed25519 -out key.pem``);
2. else the newest managed key in ``<state dir>/keys/`` (``armctl keys create`` writes one, mode
   0600 in a 0700 directory); the first signature needed without one creates it.

A key is named by its id (``kid``): the first 16 hex digits of the SHA-256 of its raw public key,
so the same key has the same id wherever it is loaded. The public half of every key that signed
is registered in the store (``signing_keys``, by :func:`register`), so each replica and every
export lists all of them: rotation (``armctl keys create``) adds a key and keeps the old public
keys for verifying what they signed. The private half never leaves its file: it is not stored,
logged, exported or shown (a :class:`Signer`'s repr names the key id and the file only).

Used by ``evidence.checkpoints``, ``evidence.packing``, ``evidence.opasigning`` and the CLI's
``armctl keys``; ``GET /v1/keys`` publishes :func:`published`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler import errors
from reconciler.state import tables

__all__ = [
    "ALGORITHM",
    "PublicKey",
    "Signer",
    "create",
    "load_signer",
    "local_signers",
    "parse_public",
    "published",
    "register",
    "signer_for",
    "trusted",
]

#: The JOSE name of the signature algorithm (RFC 8037): Ed25519.
ALGORITHM = "EdDSA"

#: DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 raw key bytes follow it.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

log = logging.getLogger(__name__)


def kid_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass(frozen=True)
class PublicKey:
    """The public half of a signing key: what verifies a signature."""

    raw: bytes  # the 32 bytes of the Ed25519 public key

    @property
    def kid(self) -> str:
        return kid_of(self.raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> str:
        body = base64.b64encode(_SPKI_PREFIX + self.raw).decode()
        return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"

    def as_dict(self) -> dict[str, Any]:
        """The key as ``GET /v1/keys``, ``armctl keys list`` and an audit pack show it: its id,
        algorithm, the raw key in base64, PEM (what OPA's ``keys`` configuration takes), the PEM's
        base64 line alone, and JWK."""
        return {
            "kid": self.kid,
            "algorithm": ALGORITHM,
            "publicKey": base64.b64encode(self.raw).decode(),
            "publicKeyPem": self.pem(),
            # The PEM's one line of base64 (the DER SubjectPublicKeyInfo): what an OPA sidecar's
            # configuration takes through an environment variable (examples/opa-sidecar).
            "spki": base64.b64encode(_SPKI_PREFIX + self.raw).decode(),
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.raw), "kid": self.kid, "alg": ALGORITHM, "use": "sig"},
        }


class Signer:
    """A private key loaded to sign with; ``source`` says where it came from."""

    def __init__(self, private: ed25519.Ed25519PrivateKey, source: str, path: Path, created: bool = False) -> None:
        self._private = private
        self.public = PublicKey(private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        self.source = source  # "managed" | "file"
        self.path = path
        self.created = created  # made by this process, just now

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:  # never the key itself
        return f"Signer(kid={self.kid!r}, source={self.source!r}, path={str(self.path)!r})"


def parse_public(text: str | bytes, where: str = "the public key") -> PublicKey:
    """A public key from what a user has at hand: a PEM public key, the base64 of the raw key or
    of its DER, or one key as ``GET /v1/keys`` / ``armctl keys list --format json`` print it."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise errors.ConfigError(f"{where} is not text (PEM or base64)") from exc
    text = text.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.ConfigError(f"{where} is not valid JSON: {exc}") from exc
        value = document.get("publicKey") if isinstance(document, dict) else None
        if not isinstance(value, str):
            raise errors.ConfigError(f'{where}: a JSON key needs "publicKey" (base64), as GET /v1/keys lists it')
        text = value
    if text.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise errors.ConfigError(f"{where} is not a PEM public key: {exc}") from exc
        if not isinstance(loaded, ed25519.Ed25519PublicKey):
            raise errors.ConfigError(f"{where} is not an Ed25519 key")
        return PublicKey(loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None)
    except (binascii.Error, ValueError) as exc:
        raise errors.ConfigError(f"{where} is neither PEM nor base64: {exc}") from exc
    if len(raw) == 44 and raw.startswith(_SPKI_PREFIX):
        raw = raw[len(_SPKI_PREFIX) :]
    if len(raw) != 32:
        raise errors.ConfigError(f"{where} is not an Ed25519 public key ({len(raw)} bytes, not 32)")
    return PublicKey(raw)


def load_signer(path: Path, source: str, label: str) -> Signer:
    """The private key in ``path`` (PKCS#8 PEM, Ed25519); ``label`` names where it was configured."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"{label}: cannot read the signing key {path}: {exc.strerror or exc}") from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The message of the library never quotes the key; the key itself is not repeated.
        raise errors.ConfigError(
            f"{label}: {path} is not an unencrypted PEM private key (make one with 'openssl genpkey -algorithm ed25519')"
        ) from exc
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise errors.ConfigError(f"{label}: {path} holds a {type(private).__name__.lstrip('_')}, not an Ed25519 key")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the signing key %s can be read by other users (mode %o): make it 0600", path, stat.S_IMODE(mode))
    return Signer(private, source, path)


def _key_files(keys_dir: Path) -> list[Path]:
    if not keys_dir.is_dir():
        return []
    return sorted(p for p in keys_dir.iterdir() if p.suffix == ".pem" and p.is_file())


def local_signers(keys_dir: Path) -> list[Signer]:
    """The managed keys in ``keys_dir``, oldest first (file names start with their creation time)."""
    return [load_signer(path, "managed", f"managed key {path.name}") for path in _key_files(keys_dir)]


def create(keys_dir: Path, now: dt.datetime) -> Signer:
    """A new managed key: written to ``keys_dir`` with mode 0600 (never readable by others, not
    even for a moment), named ``<UTC time>-<kid>.pem``; it becomes the newest, so the current one."""
    try:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
    except OSError as exc:
        raise errors.ConfigError(f"cannot make the key directory {keys_dir}: {exc.strerror or exc}") from exc
    private = ed25519.Ed25519PrivateKey.generate()
    signer = Signer(private, "managed", keys_dir, created=True)
    path = keys_dir / f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%S%fZ}-{signer.kid}.pem"
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise errors.ConfigError(f"cannot write the signing key {path}: {exc.strerror or exc}") from exc
    signer.path = path
    log.info("created signing key %s in %s", signer.kid, path)
    return signer


def signer_for(keys_dir: Path, key_file: Path | None, now: dt.datetime, *, create_missing: bool = True) -> Signer | None:
    """The key to sign with: ``ARM_SIGNING_KEY_FILE`` when set, else the newest managed key,
    else (``create_missing``) a new managed key, else None."""
    if key_file is not None:
        return load_signer(key_file, "file", "ARM_SIGNING_KEY_FILE")
    files = _key_files(keys_dir)
    if files:
        return load_signer(files[-1], "managed", f"managed key {files[-1].name}")
    return create(keys_dir, now) if create_missing else None


def register(connection: sa.Connection, public: PublicKey, source: str, now: dt.datetime) -> None:
    """Publish ``public`` in the store (once; registering it again changes nothing)."""
    k = tables.signing_keys
    if connection.execute(sa.select(k.c.kid).where(k.c.kid == public.kid)).first() is None:
        row = {"kid": public.kid, "algorithm": ALGORITHM, "source": source, "created_at": now}
        row["public_key"] = base64.b64encode(public.raw).decode()
        connection.execute(k.insert().values(**row))


def published(connection: sa.Connection) -> list[dict[str, Any]]:
    """Every registered public key, oldest first, with when it was registered and where from."""
    k = tables.signing_keys
    rows = connection.execute(sa.select(k).order_by(k.c.created_at, k.c.kid)).mappings()
    return [
        {**PublicKey(base64.b64decode(row["public_key"])).as_dict(), "source": row["source"],
         "createdAt": row["created_at"].isoformat()}
        for row in rows
    ]  # fmt: skip


def trusted(connection: sa.Connection, extra: Iterable[PublicKey] = ()) -> dict[str, PublicKey]:
    """The public keys verification accepts: the registered ones and ``extra`` (local keys, keys
    given on the command line), by key id."""
    keys = {key["kid"]: PublicKey(base64.b64decode(key["publicKey"])) for key in published(connection)}
    keys.update({key.kid: key for key in extra})
    return keys
