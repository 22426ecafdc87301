"""Settings come from ARM_* variables, options override them, bad values name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import errors
from reconciler.settings import Settings


def test_defaults_environment_and_overrides() -> None:
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env(
        {
            "ARM_STATE_DIR": "/srv/arm",
            "ARM_REF": "main",
            "ARM_MAX_FILE_BYTES": "2048",
            "ARM_DATABASE_URL": "postgresql+psycopg://db/arm",
        },
        ref="release",
        path=None,
    )
    assert settings.state_dir == Path("/srv/arm") and settings.cache_dir == Path("/srv/arm/cache")
    assert settings.ref == "release" and settings.path == "fleet"
    assert settings.max_file_bytes == 2048
    assert settings.database == "postgresql+psycopg://db/arm"
    assert Settings.from_env({"ARM_STATE_DIR": "st"}).database == "sqlite:///st/arm.db"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ARM_MAX_FILE_BYTES": "lots"}, "ARM_MAX_FILE_BYTES: 'lots' is not a whole number"),
        ({"ARM_MAX_FILE_BYTES": "10"}, "ARM_MAX_FILE_BYTES: 10 is below the minimum of 1024"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        Settings.from_env(environ)
