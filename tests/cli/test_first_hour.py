"""What a new operator meets in the first hour, over the sample fleet applied to a real database:
tokens they can list and cannot name twice, tables with headers, counts in English, and a
history that says when its limit cut older records."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli import output
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo


@pytest.fixture
def armctl(tmp_path: Path, sample_repo: GitRepo, db_url: str) -> Iterator[Armctl]:
    applied = applied_sample(tmp_path, db_url, sample_repo)
    yield applied
    applied.engine.dispose()


def test_tokens_instances_and_history_read_well_for_a_new_operator(armctl: Armctl) -> None:
    create = ("token", "create", "--kind", "runtime", "--tenant", "acme")
    secret = armctl.ok(*create, "--name", "edge").stdout.strip()
    # A second live token of one name would be revoked with the first: refused, nothing stored.
    assert armctl.refused(*create, "--name", "edge").startswith("Conflict: a live token is already named 'edge'")
    listed = armctl.json("token", "list")
    assert [(t["name"], t["kind"], t["tenant"], t["status"]) for t in listed] == [("edge", "runtime", "acme", "live")]
    text = armctl.ok("token", "list").stdout
    assert text.splitlines()[0].split() == ["NAME", "KIND", "TENANT", "OPERATOR", "SCOPE", "CREATED", "EXPIRES", "STATUS"]
    assert secret not in text + str(listed)  # shown once, at creation, never listed
    armctl.ok("token", "revoke", "--name", "edge")
    assert armctl.json("token", "list") == []
    assert [t["status"] for t in armctl.json("token", "list", "--all")] == ["revoked"]
    assert armctl.ok(*create, "--name", "edge").stdout.startswith("arm_")  # the name is free again

    instances = armctl.ok("instance", "list").stdout.splitlines()
    assert instances[0].split() == ["ID", "STATE", "VERSION", "ENVIRONMENT", "HEALTH"]
    assert len(instances) > 2

    history = armctl.ok("history", "--limit", "3")
    assert len(history.stdout.splitlines()) == 3
    assert "the newest 3 matching records" in history.stderr
    assert "newest" not in armctl.ok("history", "--limit", "100000").stderr

    assert (output.plural(1, "replica"), output.plural(2, "replica"), output.plural(0, "change")) == (
        "1 replica",
        "2 replicas",
        "0 changes",
    )


def test_log_level_info_is_not_the_schedulers_chatter() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        output.configure_logging("plain", "info")
        assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.WARNING)
        assert logging.getLogger("reconciler.daemon.scheduling").isEnabledFor(logging.INFO)
        output.configure_logging("plain", "debug")
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:], root.level = handlers, level
        logging.getLogger("apscheduler").setLevel(logging.NOTSET)
