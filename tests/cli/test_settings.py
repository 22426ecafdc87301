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
    assert (
        Settings().idle_poll_microseconds == 200
        and Settings.from_env({"ARM_IDLE_POLL_MICROSECONDS": "0"}).idle_poll_microseconds == 0
    )
    assert settings.database == "postgresql+psycopg://db/arm"
    assert Settings.from_env({"ARM_STATE_DIR": "st"}).database == "sqlite:///st/arm.db"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ARM_MAX_FILE_BYTES": "lots"}, "ARM_MAX_FILE_BYTES: 'lots' is not a whole number"),
        ({"ARM_MAX_FILE_BYTES": "10"}, "ARM_MAX_FILE_BYTES: 10 is below the minimum of 1024"),
        ({"ARM_POLL_INTERVAL_SECONDS": "soon"}, "ARM_POLL_INTERVAL_SECONDS: 'soon' is not a number"),
        ({"ARM_POLL_INTERVAL_SECONDS": "0"}, "ARM_POLL_INTERVAL_SECONDS: 0.0 is below the minimum of 0.1"),
        ({"ARM_CANARY_STEP_SECONDS": "nan"}, "ARM_CANARY_STEP_SECONDS: nan is not finite"),
        ({"ARM_HEARTBEAT_TIMEOUT_SECONDS": "inf"}, "ARM_HEARTBEAT_TIMEOUT_SECONDS: inf is not finite"),
        ({"ARM_IDLE_POLL_MICROSECONDS": "-1"}, "ARM_IDLE_POLL_MICROSECONDS: -1 is below the minimum of 0"),
        ({"ARM_IDLE_POLL_MICROSECONDS": "2000000"}, "ARM_IDLE_POLL_MICROSECONDS: 2000000 is above the maximum of 1e\\+06"),
        ({"ARM_IDLE_POLL_MICROSECONDS": "0.5"}, "ARM_IDLE_POLL_MICROSECONDS: '0.5' is not a whole number"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        Settings.from_env(environ)


def test_daemon_settings_are_read_and_secrets_stay_out_of_reprs() -> None:
    settings = Settings.from_env(
        {
            "ARM_POLL_INTERVAL_SECONDS": "2.5",
            "ARM_POLL_JITTER_SECONDS": "1",
            "ARM_WEBHOOK_SECRET": "hook-s3cret",
            "ARM_OPA_TOKEN": "opa-s3cret",
            "ARM_DATABASE_URL": "postgresql+psycopg://arm:db-s3cret@db/arm",
        }
    )
    assert (settings.poll_interval_seconds, settings.poll_jitter_seconds, settings.webhook_secret) == (2.5, 1.0, "hook-s3cret")
    assert "s3cret" not in repr(settings)


def test_the_idle_poll_setting_reaches_the_servers_protocol(tmp_path: Path) -> None:
    from reconciler.cli import serving
    from reconciler.decisions import deciding
    from reconciler.server import app
    from reconciler.state import database

    db = database.connect(f"sqlite:///{tmp_path / 'arm.db'}")
    database.migrate(db)
    decider = deciding.Decider(db, group_commit=True)
    try:
        application = app.create_app(db, decider=decider)
        options = serving._http_options(application, Settings(idle_poll_microseconds=150))
        assert options["http"].idle_poll.seconds == pytest.approx(150e-6)
        assert serving._http_options(application, Settings(idle_poll_microseconds=0))["http"].idle_poll is None
    finally:
        decider.close()
        db.dispose()
