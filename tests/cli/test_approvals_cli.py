"""``armctl approvals list | show | approve | deny`` as an approver runs them: a real process over
a fleet applied to a real database, a tool call asked with ``armctl decide``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests import armctl as armctl_
from tests.conftest import GitRepo
from tests.server.serving import tenant_fleet

SECRET = "sk-live0123456789abcdefXYZ"
CALL = {"invoice": "INV-1042", "amount": 5, "api_key": SECRET}


class Armctl:
    def __init__(self, tmp_path: Path, db_url: str, repo: Path) -> None:
        self.env = {"ARM_STATE_DIR": str(tmp_path / "state"), "ARM_DATABASE_URL": db_url, "ARM_REPO": str(repo)}
        self.db_url = db_url

    def __call__(self, *args: str) -> armctl_.Result:
        done = armctl_.invoke(args, self.env)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def json(self, *args: str) -> Any:
        done = self(*args, "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def ask_refund(self) -> int:
        """Asks the call that needs approval; the id of the approval it opens."""
        asked = self(
            "decide", "--instance", "acme:app-dev-g1-0", "--tool", "payments.refund", "--args", json.dumps(CALL),
            "--cost", "0.25", "--run", "run-7", "--format", "json",
        )  # fmt: skip
        answer = json.loads(asked.stdout)
        assert (asked.returncode, answer["decision"]) == (2, "NEEDS_APPROVAL"), asked.stdout + asked.stderr
        return int(answer["approvalId"])


@pytest.fixture
def armctl(tmp_path: Path, git_repo: GitRepo, db_url: str) -> Armctl:
    git_repo.commit({"fleet/acme.yaml": tenant_fleet("acme")})
    armctl = Armctl(tmp_path, db_url, git_repo.path)
    for command in ("init", "apply"):
        assert armctl(command).returncode == 0
    return armctl


def test_an_approver_sees_the_call_it_approves_in_list_and_show(armctl: Armctl) -> None:
    approval_id = armctl.ask_refund()
    listed = armctl("approvals", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{approval_id:>5}  PENDING   ToolCall/acme:app-dev-g1-0  ")
    assert lines[0].endswith("0/1 from oncall")
    assert lines[1] == (
        '       call: payments.refund {"amount": 5, "api_key": "[REDACTED]", "invoice": "INV-1042"}  cost 0.25  run run-7'
    )
    assert lines[2].startswith("       why: ") and "RED" in listed.stdout
    assert SECRET not in listed.stdout
    (as_json,) = armctl.json("approvals", "list")
    assert as_json["request"] == {
        "instance": "acme:app-dev-g1-0",
        "tool": "payments.refund",
        "args": {"invoice": "INV-1042", "amount": 5, "api_key": "[REDACTED]"},
        "costEstimate": 0.25,
        "runId": "run-7",
    }
    assert as_json["reasons"] and all(isinstance(r, str) for r in as_json["reasons"])
    shown = armctl.json("approvals", "show", str(approval_id))
    assert (shown["id"], shown["request"], shown["reasons"]) == (approval_id, as_json["request"], as_json["reasons"])
    assert armctl("approvals", "show", str(approval_id)).stdout.splitlines()[:2] == lines[:2]
    missing = armctl("approvals", "show", "999999")
    assert (missing.returncode, missing.stderr.strip()) == (1, "NotFound: approval 999999 does not exist")


def test_approve_and_deny_need_a_justification(armctl: Armctl) -> None:
    approval_id = armctl.ask_refund()
    for verb in ("approve", "deny"):
        bare = armctl("approvals", verb, str(approval_id), "--as", "olga")
        assert bare.returncode == 1 and "Missing option '--justification' / '-m'" in bare.stderr
        blank = armctl("approvals", verb, str(approval_id), "--as", "olga", "-m", "  ")
        assert blank.returncode == 1 and "Invalid value for '--justification' / '-m'" in blank.stderr
        assert "may not be blank" in blank.stderr
    with sa.create_engine(armctl.db_url).connect() as connection:
        status, decisions = connection.execute(
            sa.select(tables.approvals.c.status, tables.approvals.c.decisions).where(tables.approvals.c.id == approval_id)
        ).one()
    assert (status, decisions) == ("PENDING", [])
    approved = armctl("approvals", "approve", str(approval_id), "--as", "olga", "-m", "refund INV-1042 ok")
    assert approved.returncode == 0 and f"Approval {approval_id} approved by olga: now APPROVED (1/1)." in approved.stdout
    shown = armctl("approvals", "show", str(approval_id)).stdout
    assert "APPROVE by olga at " in shown and shown.rstrip().endswith(": refund INV-1042 ok")


def test_an_approval_already_decided_is_a_conflict_and_a_used_one_can_be_listed(armctl: Armctl) -> None:
    approval_id = armctl.ask_refund()
    assert armctl("approvals", "approve", str(approval_id), "--as", "olga", "-m", "ok").returncode == 0
    again = armctl("approvals", "deny", str(approval_id), "--as", "olga", "-m", "no")
    assert (again.returncode, again.stderr.strip()) == (1, f"Conflict: approval {approval_id} is APPROVED, not PENDING")
    not_permitted = armctl("approvals", "approve", str(approval_id), "--as", "vic", "-m", "me too")
    assert not_permitted.returncode == 1 and not_permitted.stderr.startswith("Forbidden: operator 'vic' holds no roles")
    allowed = armctl(
        "decide", "--instance", "acme:app-dev-g1-0", "--tool", "payments.refund", "--args", json.dumps(CALL),
        "--cost", "0.25", "--run", "run-7",
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stdout
    # It used the approval: no advice to approve it again.
    assert "armctl approvals approve" not in allowed.stdout
    assert f"approval {approval_id} (decided; 'armctl approvals list --status all' shows it)" in allowed.stdout
    assert [a["id"] for a in armctl.json("approvals", "list", "--status", "used")] == [approval_id]
    assert [a["id"] for a in armctl.json("approvals", "list", "--status", "USED")] == [approval_id]
    assert armctl.json("approvals", "list", "--status", "approved") == []
    assert "No used approvals." not in armctl("approvals", "list", "--status", "used").stdout
    bogus = armctl("approvals", "list", "--status", "bogus")
    assert bogus.returncode == 1  # a usage error: armctl keeps 2 for "changes" (plan)
    assert "'bogus' is not one of 'pending', 'approved', 'denied', 'expired', 'used', 'all'" in bogus.stderr
