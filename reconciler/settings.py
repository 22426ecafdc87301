"""Settings, read from the environment (prefix ``ARM_``) and passed in explicitly.

There is no module-level settings object: the CLI builds one :class:`Settings` with
:meth:`Settings.from_env` plus its own options, and hands it to what it calls. Every field is
documented in the README's configuration table; none has a secret default.

This is a plain pydantic model with a small environment reader rather than a pydantic-settings
model: importing pydantic-settings (and the asyncio it pulls in) costs ~0.1 s on every CLI call,
a fifth of the budget of a warm ``armctl validate``. The behaviour is the same: ``ARM_<FIELD>``
in upper case, validated and converted by pydantic, options override the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

from reconciler import errors

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "ARM_"


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = pydantic.Field(default=Path(".arm"), description="where the SQLite database and caches live")
    repo: str = pydantic.Field(default=".", description="fleet repository: a local path or a Git URL")
    ref: str = pydantic.Field(default="HEAD", description="branch, tag or SHA to reconcile")
    path: str = pydantic.Field(default="fleet", description="directory of the fleet inside the repository")
    max_file_bytes: int = pydantic.Field(default=1024 * 1024, ge=1024, description="largest fleet file that is read")
    database_url: str | None = pydantic.Field(default=None, description="SQLAlchemy URL; default SQLite in the state directory")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ARM_*`` variables, then ``overrides`` (options given on the command line)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except pydantic.ValidationError as exc:
            details = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise errors.ConfigError(f"invalid settings: {details}") from exc

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'arm.db'}"
