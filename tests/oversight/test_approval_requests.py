"""What a tool call's approval request records and shows, and what deciding one requires."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.decisions import deciding
from reconciler.oversight import approving
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.decisions.calls import CATALOG, ENVELOPE, NOW, Clock, ask
from tests.reconcile import scenario

TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"

# A fleet rule whose reason quotes arguments, a secret among them.
QUOTING = """\
package arm.ext.team

import rego.v1

approval contains msg if {
	input.tool.name == "crm.lookup"
	input.args.password
	msg := sprintf("a lookup with password %s for %s needs a human", [input.args.password, input.args.customer])
}
"""


@pytest.fixture
def decider(git_repo: GitRepo, db_url: str) -> deciding.Decider:
    files = scenario.first_commit_files() | {"fleet/base.yaml": CATALOG, "fleet/envelopes.yaml": ENVELOPE}
    files["fleet/policies/team.rego"] = QUOTING
    git_repo.commit(files, author=scenario.AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    return deciding.Decider(rec.db, clock=Clock())  # type: ignore[arg-type]


def shown(decider: deciding.Decider, approval_id: int) -> dict[str, object]:
    with decider.db.connect() as connection:
        (row,) = approving.list_approvals(connection, None, approval_id=approval_id)
    return row


def test_the_request_holds_the_redacted_call_and_keeps_the_chain_verifiable(decider: deciding.Decider) -> None:
    args = {"amount": 20, "ratio": 1e21, "auth": {"token": TOKEN}, "to": [f"Bearer {TOKEN}"]}
    asked = ask(decider, "payments.refund", args, cost_estimate=0.5, run_id="run-1")
    assert asked.decision == "NEEDS_APPROVAL" and asked.approval_id is not None
    row = shown(decider, asked.approval_id)
    assert row["request"] == {
        "instance": "acme:app-dev-g1-0",
        "tool": "payments.refund",
        # A number PostgreSQL's JSONB writes back in another form still hashes the same (verified below).
        "args": {"amount": 20, "ratio": 1e21, "auth": {"token": "[REDACTED]"}, "to": ["[REDACTED]"]},
        "costEstimate": 0.5,
        "runId": "run-1",
    }
    assert row["reasons"] and TOKEN not in str(row)
    with decider.db.connect() as connection:
        assert list(chain.verify(connection)) == []
        requested = connection.execute(
            sa.select(tables.change_records.c.after).where(tables.change_records.c.type == "APPROVAL_REQUESTED")
        ).scalar_one()
    assert requested["request"] == row["request"] and requested["reasons"] == row["reasons"]


def test_a_secret_quoted_in_a_reason_is_not_shown_to_the_approver(decider: deciding.Decider) -> None:
    asked = ask(decider, "crm.lookup", {"password": "hunter22", "customer": "C-7"})
    assert asked.decision == "NEEDS_APPROVAL" and asked.approval_id is not None
    assert "a lookup with password hunter22 for C-7 needs a human" in asked.reasons  # the caller's own answer
    row = shown(decider, asked.approval_id)
    assert "a lookup with password [REDACTED] for C-7 needs a human" in row["reasons"]  # type: ignore[operator]
    assert row["request"]["args"] == {"password": "[REDACTED]", "customer": "C-7"}  # type: ignore[index]
    with decider.db.connect() as connection:
        stored = [dict(r) for r in connection.execute(sa.select(tables.approvals)).mappings()]
        stored += [dict(r) for r in connection.execute(sa.select(tables.change_records.c.after)).mappings()]
    assert "hunter22" not in str(stored)


def test_a_request_recorded_before_calls_were_kept_still_shows_its_tool_and_reasons(decider: deciding.Decider) -> None:
    asked = ask(decider, "payments.refund", {"amount": 20})
    assert asked.approval_id is not None
    c = tables.change_records.c
    with decider.db.begin() as connection:  # the record as older versions wrote it
        after = connection.execute(sa.select(c.after).where(c.type == "APPROVAL_REQUESTED")).scalar_one()
        old = {k: v for k, v in after.items() if k != "request"}
        connection.execute(tables.change_records.update().where(c.type == "APPROVAL_REQUESTED").values(after=old))
    row = shown(decider, asked.approval_id)
    assert row["request"] == {
        "instance": "acme:app-dev-g1-0",
        "tool": "payments.refund",
        "args": None,
        "costEstimate": None,
        "runId": None,
    }
    assert row["reasons"] == old["reasons"]


@pytest.mark.parametrize("justification", ["", "   ", "\n"])
def test_a_decision_without_a_justification_is_refused(decider: deciding.Decider, justification: str) -> None:
    asked = ask(decider, "payments.refund", {"amount": 20})
    assert asked.approval_id is not None
    for verdict in ("APPROVE", "DENY"):
        with pytest.raises(errors.ConfigError, match=r"^justification: "), decider.db.begin() as connection:
            approving.decide(connection, asked.approval_id, "alice", verdict, justification, NOW)
    assert shown(decider, asked.approval_id)["status"] == "PENDING"


def test_deciding_twice_is_a_conflict_and_an_unknown_status_is_refused(decider: deciding.Decider) -> None:
    asked = ask(decider, "payments.refund", {"amount": 20})
    assert asked.approval_id is not None
    with decider.db.begin() as connection:
        assert approving.decide(connection, asked.approval_id, "alice", "DENY", "not today", NOW).status == "DENIED"
    with pytest.raises(errors.Conflict, match="is DENIED, not PENDING"), decider.db.begin() as connection:
        approving.decide(connection, asked.approval_id, "alice", "APPROVE", "changed my mind", NOW)
    with pytest.raises(errors.Forbidden, match="holds viewer"), decider.db.begin() as connection:
        approving.decide(connection, asked.approval_id, "victor", "APPROVE", "me too", NOW)
    with decider.db.connect() as connection:
        assert [r["id"] for r in approving.list_approvals(connection, "denied")] == [asked.approval_id]
        with pytest.raises(errors.ConfigError, match="status 'bogus' is not one of pending, approved, denied, expired, used"):
            approving.list_approvals(connection, "bogus")
