"""``examples/docker-compose``: no Docker runs here, so the compose file is checked against what
it drives — every ``ARM_*`` variable is a setting ``Settings.from_env`` accepts, the command is
one ``armctl`` parses, the healthcheck asks ``/readyz`` (and is run against a real server)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from reconciler import settings
from reconciler.cli import main as cli_main
from tests.conftest import GitRepo
from tests.examples.conftest import (
    ARMCTL,
    EXAMPLES,
    PROJECT_ROOT,
    Fleet,
    Served,
    example_env,
    free_port,
    http_status,
    running_armctl,
    serving,
)

COMPOSE_DIR = EXAMPLES / "docker-compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
#: What a user puts in .env, as the README says.
DOT_ENV = {"POSTGRES_PASSWORD": "pg-secret", "ARM_WEBHOOK_SECRET": "hook-secret"}
#: The daemon's settings the compose file must set.
DAEMON_SETTINGS = {
    "ARM_REPO",
    "ARM_REF",
    "ARM_PATH",
    "ARM_DATABASE_URL",
    "ARM_OPA_URL",
    "ARM_WEBHOOK_SECRET",
    "ARM_POLL_INTERVAL_SECONDS",
}

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable interpolation: ``${V}``, ``${V:-default}``, ``${V-default}``,
    ``${V:?error}``, ``${V?error}`` and ``$$``; a missing required variable raises ``KeyError``."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        present = environ.get(name)
        unset = present is None or (present == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and unset:
            return str(arg)
        if op in (":?", "?") and unset:
            raise KeyError(f"{name}: {arg}")
        return present or ""

    return _VARIABLE.sub(substitute, value)


def compose(environ: Mapping[str, str] = DOT_ENV) -> dict[str, Any]:
    loaded: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE.read_text()), environ)
    return loaded


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["NAME=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_every_arm_variable_of_the_reconciler_is_a_setting_it_accepts() -> None:
    services = compose()["services"]
    env = environment_of(services["reconciler"])
    arm = {k: v for k, v in env.items() if k.startswith(settings.ENV_PREFIX)}
    fields = {settings.ENV_PREFIX + f.name.upper(): f.name for f in dataclasses.fields(settings.Settings)}
    assert set(arm) <= set(fields), f"not settings: {sorted(set(arm) - set(fields))}"
    assert set(arm) >= DAEMON_SETTINGS

    loaded = settings.Settings.from_env(arm)
    for variable, value in arm.items():
        field = fields[variable]
        assert str(getattr(loaded, field)) == str(type(getattr(loaded, field))(value)), variable
    assert loaded.poll_interval_seconds == 30.0
    assert loaded.webhook_secret == "hook-secret"

    database = urllib.parse.urlsplit(loaded.database)
    assert database.scheme == "postgresql+psycopg"
    postgres = environment_of(services[database.hostname or ""])
    assert (database.username, database.password, database.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )

    repo = urllib.parse.urlsplit(loaded.repo)
    assert repo.scheme in {"file", "https", "http", "ssh", "git"}, "ARM_REPO must be a Git URL"
    if repo.scheme == "file":  # the default: this checkout, mounted where the URL points
        mounts = [volume.split(":") for volume in services["reconciler"]["volumes"]]
        assert [PROJECT_ROOT, repo.path] in [[(COMPOSE_DIR / m[0]).resolve(), m[1]] for m in mounts], mounts
    assert (PROJECT_ROOT / loaded.path).is_dir()


def test_secrets_have_no_defaults() -> None:
    for missing in DOT_ENV:
        with pytest.raises(KeyError, match=missing):
            compose({k: v for k, v in DOT_ENV.items() if k != missing})
    raw = yaml.safe_load(COMPOSE.read_text())
    assert "pg-secret" not in COMPOSE.read_text() and "hook-secret" not in COMPOSE.read_text()
    assert raw["services"]["reconciler"]["environment"]["ARM_WEBHOOK_SECRET"].startswith("${ARM_WEBHOOK_SECRET:?")


def test_the_opa_the_reconciler_pushes_to_loads_no_bundle_and_the_sidecar_pulls_one() -> None:
    services = compose()["services"]
    opa_url = urllib.parse.urlsplit(settings.Settings.from_env(environment_of(services["reconciler"])).opa_url or "")
    engine = services[opa_url.hostname or ""]
    assert engine["image"].startswith("openpolicyagent/opa:")
    assert engine["command"][:2] == ["run", "--server"] and f"0.0.0.0:{opa_url.port}" in engine["command"]
    # A bundle owns its roots ("arm"): OPA would refuse the reconciler's policy pushes under them.
    assert not any(arg.startswith(("--config-file", "-c", "--bundle", "-b")) for arg in engine["command"])

    sidecar = services["opa-sidecar"]
    assert sidecar["image"] == engine["image"]
    config_arg = sidecar["command"][sidecar["command"].index("--config-file") + 1]
    source = next(v.split(":")[0] for v in sidecar["volumes"] if v.split(":")[1] == config_arg)
    assert (COMPOSE_DIR / source).resolve() == EXAMPLES / "opa-sidecar" / "opa-config.yaml"
    reconciler_url = urllib.parse.urlsplit(environment_of(sidecar)["ARM_URL"])
    assert reconciler_url.hostname == "reconciler"
    assert f"{reconciler_url.port}:{reconciler_url.port}" in services["reconciler"]["ports"]
    assert "ARM_TOKEN" in environment_of(sidecar)


def test_the_reconciler_runs_the_daemon_command_armctl_knows() -> None:
    services = compose()["services"]
    service = services["reconciler"]
    argv = [*service["entrypoint"], *service["command"]]
    assert argv == ["armctl", "run", "--host", "0.0.0.0", "--port", "8080"]
    assert (COMPOSE_DIR / service["build"]["context"]).resolve() == PROJECT_ROOT
    assert 'ENTRYPOINT ["armctl"]' in (PROJECT_ROOT / service["build"]["dockerfile"]).read_text()

    # The real command line: --help exits 0 only for a command that exists, with these options.
    shown = subprocess.run([ARMCTL, *argv[1:], "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.startswith("Usage: armctl run [OPTIONS]") and "--host" in shown.stdout and "--port" in shown.stdout
    # ... and click parses the arguments (types included) without running the daemon.
    group = click.Context(cli_main.cli)
    run = cli_main.cli.get_command(group, argv[1])
    assert run is not None
    parsed = run.make_context(argv[1], argv[2:], parent=group).params
    assert (parsed["host"], parsed["port"]) == ("0.0.0.0", 8080)

    migrate = services["migrate"]
    assert [*migrate["entrypoint"], *migrate["command"]] == ["armctl", "init"]
    assert cli_main.cli.get_command(group, "init") is not None
    assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert environment_of(migrate) == environment_of(service)


def test_the_healthcheck_asks_readyz_and_fails_until_a_commit_is_applied(served: Served, tmp_path: Path) -> None:
    service = compose()["services"]["reconciler"]
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    port = service["command"][service["command"].index("--port") + 1]
    url = f"http://127.0.0.1:{port}/readyz"
    assert url in test[3] and f"{port}:{port}" in service["ports"]

    def probe(base: str) -> int:
        check = test[3].replace(f"http://127.0.0.1:{port}", base)
        return subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=30, check=False).returncode

    assert probe(served.url) == 0
    assert probe(f"http://127.0.0.1:{free_port()}") != 0  # nothing listening
    unapplied = Fleet(served.fleet.repo, tmp_path / "unapplied", "")
    unapplied.armctl("init")
    with serving(unapplied, tmp_path / "unapplied.log", ready="/healthz") as url:
        assert http_status(f"{url}/readyz") == 503
        assert probe(url) != 0


def test_the_daemon_configured_as_in_the_compose_file_applies_and_follows_webhooks(
    db_url: str, sample_repo: GitRepo, tmp_path: Path
) -> None:
    service = compose()["services"]["reconciler"]
    env = environment_of(service)
    # Stand-ins for what only exists inside compose: the mounted checkout, the postgres service
    # (a real database here too), the engine OPA (none here: the embedded engine decides).
    env.update(ARM_REPO=f"file://{sample_repo.path}", ARM_DATABASE_URL=db_url)
    del env["ARM_OPA_URL"]
    env = example_env(tmp_path / "state", **env)
    migrate = compose()["services"]["migrate"]
    subprocess.run([*migrate["entrypoint"], *migrate["command"]], env=env, capture_output=True, check=True, timeout=60)

    def args(port: int) -> list[str]:
        command = list(service["command"])
        command[command.index("--host") + 1] = "127.0.0.1"
        command[command.index("--port") + 1] = str(port)
        return command

    healthcheck = service["healthcheck"]["test"][3]
    with running_armctl(args, env, tmp_path, tmp_path / "daemon.log") as (url, daemon):
        probe = subprocess.run([sys.executable, "-c", healthcheck.replace("http://127.0.0.1:8080", url)], timeout=30, check=False)
        assert probe.returncode == 0
        assert http_json(f"{url}/readyz")["appliedSha"] == sample_repo.git("rev-parse", "HEAD")

        envelopes = sample_repo.path / "fleet" / "envelopes.yaml"
        pushed = sample_repo.commit(
            {"fleet/envelopes.yaml": envelopes.read_text().replace("escalateAfterSeconds: 1800", "escalateAfterSeconds: 900")},
            message="escalate refunds sooner",
        )
        body = json.dumps({"ref": f"refs/heads/{env['ARM_REF']}", "after": pushed}).encode()
        signature = "sha256=" + hmac.new(env["ARM_WEBHOOK_SECRET"].encode(), body, hashlib.sha256).hexdigest()
        hook = urllib.request.Request(
            f"{url}/v1/webhooks/git",
            data=body,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(hook, timeout=10) as answer:
            assert answer.status == 202 and json.load(answer)["refresh"] is True
        deadline = time.monotonic() + 20  # the poll interval is 30 s: only the webhook makes it this fast
        while http_json(f"{url}/readyz").get("appliedSha") != pushed:
            assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.2)

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0


def http_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            loaded: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        loaded = json.load(exc)
    return loaded
