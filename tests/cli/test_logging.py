"""Logs: plain or JSON lines, structured fields kept, credentials in URLs stripped."""

from __future__ import annotations

import json
import logging

import pytest

from reconciler.cli import output


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_credentials_in_urls_never_reach_a_log_line(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        output.configure_logging(fmt, "info")
        logging.getLogger("reconciler.test").warning(
            "cannot fetch %s: %s", "https://bot:ghp_s3cr3t@git.example.com/acme/fleet.git", "timeout", extra={"revision": "r1"}
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = capsys.readouterr().err.strip()
    assert "ghp_s3cr3t" not in line
    assert "bot" not in line
    assert "https://***@git.example.com/acme/fleet.git" in line
    if fmt == "json":
        record = json.loads(line)
        assert record["level"] == "warning"
        assert record["revision"] == "r1"
        assert record["message"] == "cannot fetch https://***@git.example.com/acme/fleet.git: timeout"
