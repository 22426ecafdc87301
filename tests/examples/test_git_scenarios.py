"""``examples/promote-by-pr`` and ``examples/rollback-by-revert``: the scripts run as their
READMEs say, with the venv's ``armctl`` on PATH, and leave the database as they claim."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import sqlalchemy as sa

from reconciler.state import tables
from tests.examples.conftest import EXAMPLES, Fleet, example_env

PROMOTE = EXAMPLES / "promote-by-pr" / "promote.sh"
ROLLBACK = EXAMPLES / "rollback-by-revert" / "rollback.sh"


def run_script(script: Path, *args: Path) -> subprocess.CompletedProcess[str]:
    """The script with these arguments and no ARM_STATE_DIR (it takes one as its second argument)."""
    return subprocess.run(
        [str(script), *map(str, args)],
        env=example_env(None),
        cwd=args[0].parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def scenario_fleet(work: Path, state: Path) -> Fleet:
    """The scenario's repository and database, read back with the real armctl."""
    repo = work / "fleet-repo"
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True, check=True)
    return Fleet(repo, state, sha.stdout.strip())


def test_a_version_is_promoted_by_pull_request_approval_and_the_next_apply(tmp_path: Path) -> None:
    work, state = tmp_path / "promote", tmp_path / "arm-state"
    done = run_script(PROMOTE, work, state)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    fleet = scenario_fleet(work, state)
    merged = fleet.sha
    assert fleet.git("--git-dir", str(work / "origin.git"), "rev-parse", "main") == merged  # pushed

    comment = (work / "plan.md").read_text()
    assert comment.startswith("### ARM plan for `HEAD@sha1:") and "against `origin/main`" in comment
    assert "**2 changes**" in comment
    assert "| ~ | AgentVersion | `support-agent@2.0.0` | `VERSION_UPDATED` |" in comment
    assert (
        "| ? | Approval | `AgentVersion/support-agent@2.0.0` | `APPROVAL_REQUESTED` | "
        "CANDIDATE->APPROVED: 1 from on-call or release-manager |" in comment
    )
    assert "#### Rego unit tests" in comment and "passed." in comment
    # The plan's scratch database started with the runs production recorded: no phantom waits.
    assert "waiting for evaluation" not in comment
    assert len(json.loads((work / "runs.json").read_text())) == 10
    assert "support-agent@2.0.0: passing: regression suite support-regression passed in run 6 on sha256:" in out

    waiting = re.search(
        r"AgentVersion support-agent@2\.0\.0: Waiting \(ApprovalPending\) CANDIDATE -> APPROVED: "
        r"waiting for 1 approval from on-call or release-manager \(approval (\d+)\)",
        out,
    )
    assert waiting, out
    approval = waiting.group(1)
    assert f"Forbidden: operator 'jordan-reyes' holds viewer; approval {approval} needs one of on-call, release-manager" in out
    assert f"Approval {approval} approved by maya-chen: now APPROVED (1/1)." in out
    assert out.rstrip().endswith(f"support-agent@2.0.0: CANDIDATE -> APPROVED at commit {merged[:12]}, run 4")

    steps = fleet.history("--kind", "AgentVersion", "--name", "support-agent@2.0.0", "--type", "VERSION_TRANSITIONED")
    assert [(r["before"], r["after"], r["sha"][:12]) for r in steps][-1] == (
        {"lifecycle": "CANDIDATE"},
        {"lifecycle": "APPROVED"},
        merged[:12],
    )
    (decided,) = fleet.history("--type", "APPROVAL_DECIDED")
    assert (decided["object_name"], decided["operator"]) == (approval, "maya-chen")
    assert decided["after"]["justification"] == "Evaluations green; reviewed in PR #58"
    v = tables.agent_versions.c
    (row,) = fleet.query(sa.select(v.lifecycle).where(v.name == "support-agent@2.0.0"))
    assert row.lifecycle == "APPROVED"

    again = run_script(PROMOTE, work)
    assert again.returncode == 1 and "already holds a fleet repository" in again.stderr


def test_a_git_revert_rolls_the_deployment_back(tmp_path: Path) -> None:
    work = tmp_path / "rollback"
    done = run_script(ROLLBACK, work)  # no STATE_DIR argument: WORK_DIR/state
    assert done.returncode == 0, done.stdout + done.stderr
    fleet = scenario_fleet(work, work / "state")
    assert (work / "state" / "arm.db").is_file()
    subject = fleet.git("log", "-1", "--format=%s %an")
    assert subject == 'Revert "Roll out support-agent 2.2.0 to dev" Sam Okafor'

    (rolled,) = fleet.history("--type", "DEPLOYMENT_ROLLED_BACK")
    assert (rolled["object_name"], rolled["sha"], rolled["operator"]) == ("support-agent-dev", fleet.sha, "sam-okafor")
    assert rolled["before"]["version"] == "support-agent@2.2.0"
    assert rolled["after"]["version"] == "support-agent@2.1.0"
    assert done.stdout.rstrip().endswith(
        f"support-agent-dev rolled back: support-agent@2.2.0 -> support-agent@2.1.0 at commit {fleet.sha[:12]} by sam-okafor"
    )

    i = tables.instances.c
    instances = fleet.query(sa.select(i.id, i.version, i.state).where(i.deployment == "support-agent-dev").order_by(i.id))
    assert [tuple(r) for r in instances] == [
        ("acme:support-agent-dev-g1-0", "support-agent@2.1.0", "RETIRED"),
        ("acme:support-agent-dev-g2-0", "support-agent@2.2.0", "RETIRED"),
        ("acme:support-agent-dev-g3-0", "support-agent@2.1.0", "ACTIVE"),
    ]
    status = fleet.armctl("status", "--format", "json").stdout
    assert f'"appliedSha": "{fleet.sha}"' in status
