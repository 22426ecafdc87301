"""``armctl init | plan | apply | status | history | approvals | audit verify`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler.state import database, tables
from tests import armctl as armctl_
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR, version


class Armctl:
    def __init__(self, tmp_path: Path, db_url: str, repo: Path) -> None:
        self.env = {"ARM_STATE_DIR": str(tmp_path / "state"), "ARM_DATABASE_URL": db_url, "ARM_REPO": str(repo)}
        self.db_url = db_url

    def __call__(self, *args: str) -> armctl_.Result:
        return armctl_.invoke(args, self.env)

    def json(self, *args: str) -> object:
        result = self(*args, "--format", "json")
        assert result.returncode in (0, 2), result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def armctl(tmp_path: Path, git_repo: GitRepo, db_url: str) -> Armctl:
    git_repo.commit(scenario.first_commit_files() | {"fleet/app/v1.yaml": version("1.0.0", "APPROVED")}, "add app", author=AUTHOR)
    return Armctl(tmp_path, db_url, git_repo.path)


def test_commands_refuse_a_database_without_schema(armctl: Armctl) -> None:
    result = armctl("status")
    assert result.returncode == 1
    assert "StoreError: the database" in result.stderr and "has no schema yet: run 'armctl init'" in result.stderr


def test_plan_apply_status_history_approve(armctl: Armctl, git_repo: GitRepo) -> None:
    assert f"schema none → {database.SCHEMA_HEAD}" in armctl("init").stdout
    assert "is up to date" in armctl("init").stdout

    plan = armctl("plan")
    assert plan.returncode == 2, plan.stderr
    assert "+ app@1.0.0  VERSION_CREATED" in plan.stdout
    assert "→ app@1.0.0  VERSION_TRANSITIONED  lifecycle: DRAFT → TESTING" in plan.stdout
    markdown = armctl("plan", "--format", "markdown")
    assert markdown.returncode == 2
    assert markdown.stdout.startswith("### ARM plan for `HEAD@sha1:")
    assert "| + | AgentVersion | `app@1.0.0` | `VERSION_CREATED` |  |" in markdown.stdout
    assert (
        "- **AgentVersion `app@1.0.0`**: TESTING -> CANDIDATE: waiting for evaluation: capability suite qa has no run on sha256:"
        in markdown.stdout
    )
    as_json = armctl.json("plan")
    assert as_json["exitCode"] == 2 and as_json["counts"]["VERSION_TRANSITIONED"] == 1  # type: ignore[index]

    applied = armctl("apply")
    assert applied.returncode == 0, applied.stderr
    assert "✓ applied HEAD@sha1:" in applied.stdout
    again = armctl("apply")
    assert "is already applied; nothing to do" in again.stdout
    nothing = armctl("plan")
    assert nothing.returncode == 0
    assert "No changes." in nothing.stdout
    assert armctl.json("status")["versionsByLifecycle"] == {"TESTING": 1}  # type: ignore[index]

    # Evidence is recorded, not declared: a run of suite qa, then the step it unblocks.
    submitted = armctl(
        "eval",
        "submit",
        "--version",
        "app@1.0.0",
        "--suite",
        "qa",
        "--metric",
        "pass_rate=0.95",
        "--samples",
        "100",
        "--as",
        "alice",
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "Evidence: passing: capability suite qa passed in run 1 on sha256:" in submitted.stdout
    unblocked = armctl("plan", "--format", "markdown")
    assert unblocked.returncode == 2
    assert (
        "- **AgentVersion `app@1.0.0`**: CANDIDATE -> APPROVED: waiting for 1 approval from release-manager" in unblocked.stdout
    )
    assert armctl("apply").returncode == 0

    status = armctl.json("status")
    assert status["appliedSha"] == git_repo.git("rev-parse", "HEAD")  # type: ignore[index]
    assert status["versionsByLifecycle"] == {"CANDIDATE": 1}  # type: ignore[index]
    (waiting,) = status["conditions"]  # type: ignore[index]
    assert waiting["reason"] == "ApprovalPending" and waiting["observedRevision"].startswith("HEAD@sha1:")
    text = armctl("status").stdout
    assert "Waiting or held" in text and "#1 APPLIED" in text

    approvals = armctl.json("approvals", "list")
    (request,) = approvals  # type: ignore[misc]
    denied = armctl("approvals", "approve", str(request["id"]), "--as", "victor", "-m", "lgtm")
    assert denied.returncode == 1
    assert denied.stderr.startswith("Forbidden: operator 'victor' holds viewer; approval")
    ok = armctl("approvals", "approve", str(request["id"]), "--as", "alice", "-m", "looks good")
    assert ok.returncode == 0 and "now APPROVED (1/1)" in ok.stdout
    assert "The next 'armctl apply' (or daemon reconcile) takes the step it unblocks." in ok.stdout
    assert armctl("plan").returncode == 2
    assert armctl("apply").returncode == 0
    assert armctl.json("status")["versionsByLifecycle"] == {"APPROVED": 1}  # type: ignore[index]

    history = armctl.json("history", "--type", "VERSION_TRANSITIONED")
    assert [(r["before"]["lifecycle"], r["after"]["lifecycle"]) for r in history] == [  # type: ignore[union-attr]
        ("DRAFT", "TESTING"),
        ("TESTING", "CANDIDATE"),
        ("CANDIDATE", "APPROVED"),
    ]
    decided = armctl.json("history", "--type", "approval_decided")
    assert [(r["operator"], r["sha"]) for r in decided] == [("alice", None)]  # type: ignore[union-attr]
    assert len(armctl.json("history", "--name", "app-dev", "--kind", "Deployment")) == 3  # type: ignore[arg-type]
    sha = git_repo.git("rev-parse", "HEAD")
    assert len(armctl.json("history", "--sha", sha[:8], "--limit", "5")) == 5  # type: ignore[arg-type]
    assert armctl("history", "--since", "yesterday").stderr.startswith("ConfigError: 'yesterday' is not an ISO 8601 time")
    assert armctl("audit", "verify").returncode == 0


def test_audit_verify_finds_a_tampered_record_and_a_tampered_genome(armctl: Armctl) -> None:
    armctl("init")
    assert armctl("apply").returncode == 0
    engine = database.connect(armctl.db_url)
    records = tables.change_records
    with engine.begin() as connection:
        target = connection.execute(sa.select(records.c.id, records.c.seq).where(records.c.type == "VERSION_CREATED")).one()
        connection.execute(records.update().where(records.c.id == target.id).values(after={"lifecycle": "APPROVED"}))
    result = armctl("audit", "verify")
    assert result.returncode == 1
    assert f"breaks at record {target.seq} (id {target.id}): hash does not match the record's content (altered)" in result.stdout

    with engine.begin() as connection:
        connection.execute(records.update().where(records.c.id == target.id).values(after=None))
        versions = tables.agent_versions
        genome = connection.execute(sa.select(versions.c.genome)).scalar_one()
        genome["model"]["name"] = "gpt-3.5-turbo"
        connection.execute(versions.update().values(genome=genome))
    result = armctl("audit", "verify", "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    (tampered,) = report["tamperedGenomes"]
    assert (tampered["name"], tampered["newly_found"]) == ("app@1.0.0", True)
    failed = armctl.json("history", "--type", "VERSION_INTEGRITY_FAILED")
    assert [r["object_name"] for r in failed] == ["app@1.0.0"]  # type: ignore[union-attr]
    again = json.loads(armctl("audit", "verify", "--format", "json").stdout)
    assert again["tamperedGenomes"][0]["newly_found"] is False
    assert len(armctl.json("history", "--type", "VERSION_INTEGRITY_FAILED")) == 1  # type: ignore[arg-type]


def test_decide_answers_with_exit_codes(armctl: Armctl) -> None:
    armctl("init")
    assert armctl("apply").returncode == 0
    allowed = armctl("decide", "--instance", "acme:app-dev-g1-0", "--tool", "crm.lookup")
    assert allowed.returncode == 0 and allowed.stdout.startswith("ALLOW (decision 1, policy ")
    denied = armctl("decide", "--instance", "ghost", "--tool", "crm.lookup", "--format", "json")
    assert denied.returncode == 3
    report = json.loads(denied.stdout)
    assert (report["decision"], report["reasons"], report["decisionId"]) == ("DENY", ["unknown instance"], 2)
    bad = armctl("decide", "--instance", "acme:app-dev-g1-0", "--tool", "crm.lookup", "--args", "{oops")
    assert bad.returncode == 1 and bad.stderr.startswith("ConfigError: --args is not JSON")
    # The decision API's number check: the field named, nothing decided.
    for args, says in [
        ('{"amount": NaN}', "ConfigError: --args: args.amount is NaN, which is not a JSON number"),
        ('{"n": [1, 1e400]}', "ConfigError: --args: args.n[1] is infinite or past a double's range"),
        ('{"id": 9007199254740993}', "ConfigError: --args: args.id is an integer past 2^53 (9007199254740991)"),
    ]:
        refused = armctl("decide", "--instance", "acme:app-dev-g1-0", "--tool", "crm.lookup", "--args", args)
        assert refused.returncode == 1 and refused.stderr.startswith(says), refused.stderr
    for cost in ("nan", "inf", "1e400", "-0.5", "1000000001"):
        refused = armctl("decide", "--instance", "acme:app-dev-g1-0", "--tool", "crm.lookup", "--cost", cost)
        assert refused.returncode == 1 and "--cost" in refused.stderr, (cost, refused.stderr)
    assert json.loads(armctl("decide", "--instance", "ghost", "--tool", "x", "--format", "json").stdout)["decisionId"] == 3


def test_decide_reads_long_arguments_from_a_file_or_standard_input(armctl: Armctl, tmp_path: Path) -> None:
    # A command line holds ~128 KiB; a runtime's call can hold up to the endpoint's 1 MiB.
    from tests import armctl as armctl_

    armctl("init")
    assert armctl("apply").returncode == 0
    long = {"note": "y" * 300_000 + " sk-" + "a" * 30}
    (tmp_path / "args.json").write_text(json.dumps(long))
    ask = ("decide", "--instance", "acme:app-dev-g1-0", "--tool", "crm.lookup", "--format", "json")
    from_file = armctl(*ask, "--args", f"@{tmp_path / 'args.json'}")
    from_stdin = armctl_.invoke([*ask, "--args", "-"], armctl.env, stdin=json.dumps(long))
    for answer in (from_file, from_stdin):
        assert answer.returncode in (0, 2, 3) and "Traceback" not in answer.stderr, answer.stderr
        assert answer.json()["risk"]["level"] == "RED"  # the secret at the end was read
        assert answer.json()["risk"]["reasons"] == ["argument note holds a secret-like value: RED"]
    (tmp_path / "big.json").write_text(json.dumps({"note": "y" * (1024 * 1024)}))
    for source, says in [
        (f"@{tmp_path / 'missing.json'}", "cannot read it: No such file or directory"),
        (f"@{tmp_path / 'big.json'}", "more than 1048576 bytes"),
    ]:
        refused = armctl(*ask, "--args", source)  # --format json: the error too, as a JSON object
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.json()["error"] == "ConfigError" and says in refused.json()["message"]


FAILING_TEST = """\
package arm.ext.team_test

import rego.v1

test_refunds_are_capped if {
	1 == 2
}
"""


def test_a_pull_request_plan_needs_no_production_database(armctl: Armctl, git_repo: GitRepo) -> None:
    git_repo.commit({"fleet/app/v2.yaml": version("1.1.0", "TESTING")}, "add 1.1.0", author=AUTHOR)
    pr = armctl("plan", "--base", "HEAD~1", "--head", "HEAD", "--format", "markdown")
    assert pr.returncode == 2, pr.stderr
    assert pr.stdout.startswith("### ARM plan for `HEAD@sha1:") and "against `HEAD~1`" in pr.stdout
    assert "| + | AgentVersion | `app@1.1.0` | `VERSION_CREATED` |" in pr.stdout
    assert "`app@1.0.0`" not in pr.stdout.split("#### Waiting")[0]  # the base is already applied: no change to 1.0.0
    assert "#### Rego unit tests" in pr.stdout and "passed." in pr.stdout
    assert armctl("status").returncode == 1  # the configured database was never touched (it has no schema)

    git_repo.commit({"fleet/policies/team_test.rego": FAILING_TEST}, "a test that fails", author=AUTHOR)
    failing = armctl("plan", "--base", "HEAD~2", "--head", "HEAD", "--format", "markdown")
    assert failing.returncode == 1, failing.stderr
    assert "failed:**" in failing.stdout and "`arm.ext.team_test.test_refunds_are_capped`: FAIL" in failing.stdout
    as_json = armctl("plan", "--base", "HEAD~2", "--head", "HEAD", "--format", "json")
    assert as_json.returncode == 1
    assert [t["name"] for t in json.loads(as_json.stdout)["regoTests"]["failed"]] == ["test_refunds_are_capped"]

    lone = armctl("plan", "--head", "HEAD")
    assert lone.returncode == 1 and "--head needs --base" in lone.stderr

    missing = armctl("plan", "--base", "no-such-ref", "--head", "HEAD")
    assert missing.returncode == 1 and "ref 'no-such-ref' not found" in missing.stderr
    assert "does not apply" not in missing.stderr  # it does not exist: nothing failed to apply


def test_status_conditions_after_a_failed_reconcile(armctl: Armctl, git_repo: GitRepo) -> None:
    armctl("init")
    before = armctl.json("status")
    assert [(c["type"], c["status"], c["reason"]) for c in before["fleetConditions"]] == [  # type: ignore[index]
        ("Ready", "False", "NothingApplied"),
        ("Reconciling", "False", "UpToDate"),
        ("Stalled", "False", "NothingApplied"),
    ]
    assert armctl("apply").returncode == 0
    good = git_repo.git("rev-parse", "HEAD")
    ready = armctl.json("status")["fleetConditions"][0]  # type: ignore[index]
    assert (ready["status"], ready["observedRevision"]) == ("True", f"HEAD@sha1:{good}")

    git_repo.commit({"fleet/bad.yaml": "apiVersion: arm/v1\nkind: Nope\n"}, "broken", author=AUTHOR)
    assert armctl("apply").returncode == 1
    bad = git_repo.git("rev-parse", "HEAD")
    ready, reconciling, stalled = armctl.json("status")["fleetConditions"]  # type: ignore[index]
    assert (ready["status"], ready["reason"], ready["observedRevision"]) == ("False", "ReconciliationFailed", f"HEAD@sha1:{good}")
    assert ready["message"].startswith(f"HEAD@sha1:{bad} failed: ") and ready["message"].endswith(f"serving HEAD@sha1:{good}")
    assert (stalled["status"], reconciling["status"]) == ("True", "False")
    text = armctl("status").stdout
    assert "Ready       False  ReconciliationFailed" in text and "Stalled     True" in text
