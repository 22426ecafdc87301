"""Settings, read from the environment (prefix ``ARM_``) and passed in explicitly.

There is no module-level settings object: the CLI builds one :class:`Settings` with
:meth:`Settings.from_env` plus its own options, and hands it to what it calls. Every field is
documented in the README's configuration table; none has a secret default.

A frozen dataclass with its own small reader, not a pydantic-settings model: importing
pydantic-settings costs ~0.25 s and building any pydantic model ~0.1 s on every CLI call, which
is half the budget of a warm ``armctl validate`` (that path needs no model otherwise). The
behaviour is the usual one: ``ARM_<FIELD>`` in upper case, typed and checked, options override
the environment, and a bad value is a ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from reconciler import errors

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "ARM_"


def _at_least(kind: type[int] | type[float], minimum: float) -> Any:
    """A converter to a finite ``kind`` (int or float) no smaller than ``minimum``."""

    def convert(value: object) -> int | float:
        try:
            number = kind(str(value))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a {'whole number' if kind is int else 'number'}") from exc
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{number} is not finite")
        if number < minimum:
            raise ValueError(f"{number} is below the minimum of {minimum:g}")
        return number

    return convert


def _at_most(convert: Any, maximum: float) -> Any:
    """``convert``, then no larger than ``maximum``."""

    def bounded(value: object) -> int | float:
        number = convert(value)
        if number > maximum:
            raise ValueError(f"{number} is above the maximum of {maximum:g}")
        return number

    return bounded


@dataclasses.dataclass(frozen=True)
class Settings:
    #: where the SQLite database, parse cache and Git mirrors live
    state_dir: Path = Path(".arm")
    #: fleet repository: a local path or a Git URL
    repo: str = "."
    #: branch, tag or SHA to reconcile
    ref: str = "HEAD"
    #: directory of the fleet inside the repository
    path: str = "fleet"
    #: largest fleet file that is read
    max_file_bytes: int = 1024 * 1024
    #: SQLAlchemy URL; default SQLite in the state directory
    database_url: str | None = dataclasses.field(default=None, repr=False)  # may hold a password
    #: op events older than this are archived (gzipped JSON Lines) and deleted
    op_event_retention_days: int = 30
    #: decide with this OPA (http(s)://host:port) instead of the embedded engine
    opa_url: str | None = None
    #: bearer token for that OPA, if it wants one
    opa_token: str | None = dataclasses.field(default=None, repr=False)
    #: ``armctl run``: seconds between fetches of the fleet repository
    poll_interval_seconds: float = 30.0
    #: ``armctl run``: up to this many seconds added at random to each poll (spreads replicas)
    poll_jitter_seconds: float = 0.0
    #: ``armctl run``: shared secret of ``POST /v1/webhooks/git`` (GitHub HMAC / GitLab token); unset: webhook off
    webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    #: an ACTIVE instance without a heartbeat for this long is marked UNHEALTHY
    heartbeat_timeout_seconds: float = 90.0
    #: ``armctl run``: seconds between canary steps (each step needs healthy canary instances)
    canary_step_seconds: float = 60.0
    #: ``armctl run``: seconds between approval expiry/escalation sweeps
    approval_sweep_seconds: float = 30.0
    #: ``armctl run``: seconds between op-event retention runs (archive, then delete)
    retention_interval_seconds: float = 3600.0
    #: a PKCS#8 PEM Ed25519 private key to sign with (bring your own); unset: managed keys in
    #: ``<state dir>/keys/`` (``armctl keys create``; made on first use)
    signing_key_file: Path | None = None
    #: op events archived past ``op_event_retention_days`` are kept this long (from their time),
    #: listed with their hashes in the chain checkpoints, and deleted only after it
    archive_retention_days: int = 180
    #: ``armctl run``: seconds between signed checkpoints of the change-record chains (and
    #: re-hashes of the stored genomes); an apply writes one too
    checkpoint_interval_seconds: float = 300.0
    #: ``armctl serve``/``run``: after answering a decision, poll for the next request this long
    #: before the core sleeps (0: sleep at once); costs up to this much CPU per decision at a trickle
    idle_poll_microseconds: int = 200
    #: ``armctl run``: seconds between passes of the notification delivery worker
    notify_interval_seconds: float = 5.0
    #: a notification is retried (with exponential backoff from 5 s, at most 30 min apart) up to
    #: this many attempts, then marked FAILED
    notify_max_attempts: int = 15
    #: seconds a webhook receiver has to answer one notification
    notify_timeout_seconds: float = 5.0

    _CONVERT: ClassVar[dict[str, Any]] = {
        "state_dir": Path,
        "max_file_bytes": _at_least(int, 1024),
        "op_event_retention_days": _at_least(int, 1),
        "poll_interval_seconds": _at_least(float, 0.1),
        "poll_jitter_seconds": _at_least(float, 0.0),
        "heartbeat_timeout_seconds": _at_least(float, 1.0),
        "canary_step_seconds": _at_least(float, 0.1),
        "approval_sweep_seconds": _at_least(float, 0.1),
        "retention_interval_seconds": _at_least(float, 1.0),
        "idle_poll_microseconds": _at_most(_at_least(int, 0), 1_000_000),
        "signing_key_file": Path,
        "archive_retention_days": _at_least(int, 1),
        "checkpoint_interval_seconds": _at_least(float, 1.0),
        "notify_interval_seconds": _at_least(float, 0.1),
        "notify_max_attempts": _at_most(_at_least(int, 1), 100),
        "notify_timeout_seconds": _at_most(_at_least(float, 0.1), 60.0),
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ARM_*`` variables, then ``overrides`` (options given on the command line)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = (raw, ENV_PREFIX + field.name.upper())
        for name, value in overrides.items():
            if value is not None:
                values[name] = (value, f"option for {name}")
        converted: dict[str, Any] = {}
        for name, (value, source) in values.items():
            convert = cls._CONVERT.get(name, str)
            try:
                converted[name] = convert(value)
            except ValueError as exc:
                raise errors.ConfigError(f"invalid settings: {source}: {exc}") from exc
        made = cls(**converted)
        if made.archive_retention_days < made.op_event_retention_days:
            # Archives hold what the database no longer does: kept for less, they would be gone
            # as soon as they were written.
            raise errors.ConfigError(
                f"invalid settings: ARM_ARCHIVE_RETENTION_DAYS ({made.archive_retention_days}) is below "
                f"ARM_OP_EVENT_RETENTION_DAYS ({made.op_event_retention_days}): archives would be deleted as they are made"
            )
        return made

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def archive_dir(self) -> Path:
        return self.state_dir / "archive"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'arm.db'}"
