"""Integrity failure stops the agent: once a version's stored genome fails verification, every
decision of its instances is DENY (``VERSION_INTEGRITY_FAILED``), in ``armctl decide`` and on the
server's fast path alike, its instances are reported, and it is decided again once it verifies."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from reconciler.oversight import access
from reconciler.server import app as server_app
from reconciler.state import database, tables
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo
from tests.server.serving import NOW, Server, auth

INSTANCE = "acme:billing-agent-dev-g1-0"
VERSION = "billing-agent@1.2.0"
TOOL = "billing.get-invoice"


def _set_model(armctl: Armctl, name: str) -> str:
    """Write a model name into the stored genome, as someone with the database's password might;
    the name it had."""
    v = tables.agent_versions
    with armctl.engine.begin() as connection:
        genome: dict[str, Any] = connection.execute(sa.select(v.c.genome).where(v.c.name == VERSION)).scalar_one()
        before = str(genome["model"]["name"])
        genome["model"]["name"] = name
        connection.execute(v.update().where(v.c.name == VERSION).values(genome=genome))
    return before


_CALLS = itertools.count()


def _args() -> str:
    """Arguments of a new call each time: the same call repeated would be denied as a loop."""
    return json.dumps({"invoice": f"INV-{next(_CALLS)}"})


def _ask(client: httpx.Client, token: str) -> dict[str, Any]:
    call = {"instance": INSTANCE, "tool": TOOL, "args": json.loads(_args())}
    response = client.post("/v1/decisions", json=call, headers=auth(token))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _until(check: Any, seconds: float = 5.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def test_a_version_that_fails_verification_is_denied_every_decision_until_it_verifies_again(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    engine = database.connect(db_url)
    with engine.begin() as connection:
        token = access.create(connection, "rt", "runtime", "acme", NOW)
    try:
        with Server(server_app.create_app(engine)) as base, httpx.Client(base_url=base, timeout=10) as client:
            assert _ask(client, token)["decision"] == "ALLOW"
            original = _set_model(armctl, "gpt-evil")

            verified = armctl("audit", "verify")
            assert verified.returncode == 1
            assert f"✗ genome of acme/{VERSION} hashes to" in verified.stdout
            assert f"every decision of its instances is denied: {INSTANCE}" in verified.stdout
            report = json.loads(armctl("audit", "verify", "--format", "json").stdout)
            (found,) = report["tamperedGenomes"]
            assert found["name"] == VERSION and INSTANCE in found["instances"]

            # The slow path (armctl decide) and the server's fast path both deny, with the reason.
            denied = armctl("decide", "--instance", INSTANCE, "--tool", TOOL, "--args", _args(), "--format", "json")
            assert denied.returncode == 3
            (reason,) = json.loads(denied.stdout)["reasons"]
            assert reason.startswith(f"VERSION_INTEGRITY_FAILED: the stored genome of version {VERSION} does not match its hash")
            # The server sees the generation bumped by the verification within its refresh.
            answer = _until(lambda: next((a for a in [_ask(client, token)] if a["decision"] == "DENY"), None))
            assert answer is not None and answer["reasons"][0].startswith("VERSION_INTEGRITY_FAILED")
            # Other versions' instances are decided as before.
            other = client.post(
                "/v1/decisions",
                json={"instance": "acme:research-agent-dev-g1-0", "tool": "kb.search-articles"},
                headers=auth(token),
            )
            assert other.json()["decision"] == "ALLOW"
            # Status reports the version and the instances it stops.
            conditions = armctl.json("status")["conditions"]
            (failing,) = [c for c in conditions if c["type"] == "IntegrityFailed"]
            assert (failing["name"], failing["reason"]) == (VERSION, "VERSION_INTEGRITY_FAILED") and INSTANCE in failing[
                "instances"
            ]
            # Every denial is recorded: a DENY change record names the reason.
            records = armctl.json("history", "--tenant", "acme", "--type", "POLICY_EVALUATED", "--limit", "10")
            assert any("VERSION_INTEGRITY_FAILED" in str(r["after"]) for r in records)

            # Put back, verified again: decided again, VERSION_INTEGRITY_VERIFIED recorded.
            _set_model(armctl, original)
            restored = armctl("audit", "verify")
            assert restored.returncode == 0, restored.stdout
            assert f"✓ genome of acme/{VERSION} hashes to its stored" in restored.stdout
            assert [r["object_name"] for r in armctl.json("history", "--type", "VERSION_INTEGRITY_VERIFIED")] == [VERSION]
            assert armctl("decide", "--instance", INSTANCE, "--tool", TOOL, "--args", _args()).returncode == 0
            assert _until(lambda: _ask(client, token)["decision"] == "ALLOW")
            assert not [c for c in armctl.json("status")["conditions"] if c["type"] == "IntegrityFailed"]
    finally:
        engine.dispose()
