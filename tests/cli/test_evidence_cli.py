"""``armctl eval submit | list``, ``armctl version list | show`` and ``armctl token create --kind ci``
as a user runs them over the sample fleet: the run it records, the step it unblocks, the
scorecard, and refusals that name what was refused (in JSON too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests.cli.sample import Armctl
from tests.conftest import GitRepo

VERSION = "research-agent@0.1.0"


@pytest.fixture
def armctl(tmp_path: Path, sample_repo: GitRepo, db_url: str) -> Iterator[Armctl]:
    """The sample fleet applied once, no run recorded: its versions wait at TESTING for evidence."""
    applied = Armctl(tmp_path, db_url, sample_repo)
    applied.ok("init")
    applied.ok("apply")
    yield applied
    applied.engine.dispose()


def submit(armctl: Armctl, *args: str, version: str = VERSION, suite: str = "jailbreak-v2", who: str = "priya-nair") -> list[str]:
    return ["eval", "submit", "--version", version, "--suite", suite, *args, "--as", who]


def test_a_submitted_run_unblocks_the_step_it_waits_for(armctl: Armctl) -> None:
    waiting = armctl.ok("version", "show", VERSION).stdout
    assert "safety suite jailbreak-v2: missing (required for TESTING->CANDIDATE)" in waiting
    genome = armctl.json("version", "show", VERSION)["genomeHash"]

    first = armctl.ok(*submit(armctl, "--metric", "refusal_rate=1", "--samples", "250", "--run-url", "https://ci.example/r/1"))
    assert first.stdout.splitlines() == [
        f"Recorded run 1 of safety suite jailbreak-v2 for {VERSION} ({genome}) by operator priya-nair.",
        "  refusal_rate: 100.0% (needs ≥ 100%) ✓",
        f"Evidence: passing: safety suite jailbreak-v2 passed in run 1 on {genome}",
        "The next reconcile reads it: 'armctl apply' (the daemon: its next poll).",
    ]
    assert "waiting for evaluation: capability suite research-briefs has no run" in armctl.ok("status").stdout

    second = armctl.json(*submit(armctl, "--metric", "citation_accuracy=0.93", "--metric", "p95_latency_seconds=31", "--samples", "80",
                                 suite="research-briefs"))  # fmt: skip
    assert second["run"]["metrics"] == {"citation_accuracy": 0.93, "p95_latency_seconds": 31.0}
    assert second["evidence"]["status"] == "passing" and second["deployed"] is False

    applied = armctl.ok("apply").stdout
    assert "1 VERSION_TRANSITIONED" in applied and "1 DEPLOYMENT_CREATED" in applied
    listed = {v["name"]: v for v in armctl.json("version", "list")}
    assert listed[VERSION]["lifecycle"] == "CANDIDATE"
    assert [d["environment"] for d in listed[VERSION]["deployedTo"]] == ["staging"]

    runs = armctl.json("eval", "list", "--version", VERSION)
    assert [(r["id"], r["suite"], r["verdict"], r["submitter"], r["runUrl"]) for r in runs] == [
        (1, "jailbreak-v2", "passing", "operator priya-nair", "https://ci.example/r/1"),
        (2, "research-briefs", "passing", "operator priya-nair", None),
    ]
    text = armctl.ok("eval", "list", "--suite", "research-briefs").stdout
    assert "#2" in text and "citation_accuracy=0.93, p95_latency_seconds=31" in text and "by operator priya-nair" in text

    shown = armctl.ok("version", "show", VERSION).stdout
    assert "lifecycle:   CANDIDATE" in shown and "integrity:   OK" in shown
    assert "capability suite research-briefs: passing (required for TESTING->CANDIDATE)" in shown
    assert "    p95_latency_seconds: 31 (needs ≤ 45) ✓" in shown
    assert "  research-agent-staging generation 1 in staging: ACTIVE" in shown


def test_the_version_list_shows_every_version_and_what_it_waits_for(armctl: Armctl) -> None:
    rows = armctl.json("version", "list")
    assert len(rows) == 9
    assert set(rows[0]) == {
        "name", "tenant", "template", "parent", "status", "lifecycle", "desiredLifecycle", "genomeHash", "integrity", "deployedTo", "waiting",
    }  # fmt: skip
    support = {r["name"]: r for r in armctl.json("version", "list", "--template", "support-agent")}
    assert list(support) == ["support-agent@1.0.0", "support-agent@1.1.0", "support-agent@2.0.0", "support-agent@2.1.0"]
    assert support["support-agent@2.1.0"]["deployedTo"] == [
        {"deployment": "support-agent-dev", "environment": "dev", "generation": 1, "state": "ACTIVE", "instances": 1}
    ]
    (waits,) = support["support-agent@2.0.0"]["waiting"]
    assert waits.startswith("TESTING -> CANDIDATE: waiting for evaluation: safety suite jailbreak-v2 has no run on sha256:")
    text = armctl.ok("version", "list", "--template", "support-agent").stdout
    assert "support-agent@2.1.0  TESTING" in text and "deployed: dev (1)" in text and "waits: TESTING -> CANDIDATE" in text


def test_refusals_name_what_was_refused_and_change_nothing(armctl: Armctl) -> None:
    before = armctl.rows(sa.select(sa.func.count().label("n")).select_from(tables.evaluation_runs))
    assert armctl.refused(*submit(armctl, "--metric", "refusal_rate=1", "--samples", "250", who="maya-chen")) == (
        "Forbidden: operator 'maya-chen' lacks permission evaluations:submit in tenant 'acme'"
    )
    assert armctl.refused(*submit(armctl, "--metric", "refusal_rate=97", "--samples", "250")) == (
        "ConfigError: metrics.refusal_rate: a rate lies between 0 and 1 (97% is 0.97), not 97.0"
    )
    assert armctl.refused(*submit(armctl, "--metric", "refusal_rate=1", "--samples", "250", version="nope@1.0.0")) == (
        "NotFound: version 'nope@1.0.0' does not exist"
    )
    assert armctl.refused(
        *submit(armctl, "--metric", "refusal_rate=1", "--samples", "250", "--genome-hash", "sha256:" + "0" * 64)
    ).startswith("Conflict: the run names genome sha256:0000")
    usage = armctl.refused(*submit(armctl, "--metric", "refusal_rate", "--samples", "250"))
    assert "give each metric as NAME=VALUE with a finite number" in usage
    as_json = armctl(*submit(armctl, "--metric", "refusal_rate=1", "--samples", "250", "--suite", "nope", "--format", "json"))
    assert as_json.returncode == 1 and as_json.json() == {
        "error": "NotFound", "message": "EvaluationSuite 'nope' is not declared in the applied fleet of tenant 'acme'",
    }  # fmt: skip
    missing = armctl("version", "show", "nope@1.0.0", "--format", "json")
    assert missing.returncode == 1 and missing.json() == {"error": "NotFound", "message": "version 'nope@1.0.0' does not exist"}
    assert armctl.rows(sa.select(sa.func.count().label("n")).select_from(tables.evaluation_runs)) == before


def test_a_ci_token_is_limited_to_its_templates(armctl: Armctl) -> None:
    made = armctl.json(
        "token", "create", "--name", "research-ci", "--kind", "ci", "--tenant", "acme", "--template", "research-agent"
    )
    assert made["kind"] == "ci" and made["token"].startswith("arm_")
    k = tables.api_tokens.c
    (row,) = armctl.rows(sa.select(k.kind, k.scope).where(k.name == "research-ci"))
    assert row == {"kind": "ci", "scope": {"templates": ["research-agent"]}}
    assert armctl.refused("token", "create", "--name", "x", "--kind", "ci", "--tenant", "acme", "--template", "sales-agent") == (
        "NotFound: template 'sales-agent' is not declared in tenant 'acme'"
    )
    assert "--template limits a ci token" in armctl.refused(
        "token", "create", "--name", "x", "--kind", "runtime", "--tenant", "acme", "--template", "research-agent"
    )
