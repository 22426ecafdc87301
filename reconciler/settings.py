"""Settings, read from the environment (prefix ``ARM_``) and passed in explicitly.

There is no module-level settings object: the CLI builds one :class:`Settings` from the
environment and its options and hands it to what it calls. Every field is documented in the
README's configuration table; none has a secret default.
"""

from __future__ import annotations

from pathlib import Path

import pydantic
import pydantic_settings

__all__ = ["Settings"]


class Settings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(env_prefix="ARM_", extra="ignore", frozen=True)

    state_dir: Path = pydantic.Field(default=Path(".arm"), description="where the SQLite database and caches live")
    repo: str = pydantic.Field(default=".", description="fleet repository: a local path or a Git URL")
    ref: str = pydantic.Field(default="HEAD", description="branch, tag or SHA to reconcile")
    path: str = pydantic.Field(default="fleet", description="directory of the fleet inside the repository")
    max_file_bytes: int = pydantic.Field(default=1024 * 1024, ge=1024, description="largest fleet file that is read")

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"
