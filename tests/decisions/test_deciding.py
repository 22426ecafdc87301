"""Tool-call decisions against an applied fleet, each recorded before it is answered."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.decisions import deciding
from reconciler.oversight import approving, holds
from reconciler.policy import opa
from reconciler.state import opevents, tables
from tests.conftest import GitRepo
from tests.decisions.calls import CATALOG, ENVELOPE, NOW, Clock, ask, records
from tests.policy.opa_double import OpaDouble
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR


def test_decisions_follow_the_envelope_and_are_all_recorded(decider: deciding.Decider) -> None:
    answers = [
        (ask(decider, "crm.lookup"), "ALLOW", ["within the envelope"]),
        (ask(decider, "crm.lookup", instance="nope"), "DENY", ["unknown instance"]),
        (ask(decider, "shell.exec"), "DENY", ["tool shell.exec is denied by the envelope"]),
        (ask(decider, "web.scrape"), "DENY", ["tool web.scrape is not in the tool catalog"]),
        (
            ask(decider, "crm.lookup", cost_estimate=1.5),
            "DENY",
            ["BUDGET_EXCEEDED: estimated cost 1.50 is above the per-call budget 1.00"],
        ),
    ]
    for decision, expected, reasons in answers:
        assert (decision.decision, decision.reasons) == (expected, reasons)
    assert answers[3][0].approval_id is None  # a deny is final: nothing to approve
    assert answers[0][0].policy_revision is not None and len(answers[0][0].policy_revision) == 40
    with decider.db.connect() as connection:
        events = connection.execute(
            sa.select(tables.op_events.c.id, tables.op_events.c.payload).where(tables.op_events.c.type == "DECISION")
        ).all()
    assert sorted(e.id for e in events) == sorted(d.decision_id for d, _, _ in answers)
    assert [name for name, _ in records(decider, "POLICY_EVALUATED")] == ["acme:app-dev-g1-0", "acme:app-dev-g1-0"]
    assert [after["reasons"] for _, after in records(decider, "BUDGET_EXCEEDED")] == [answers[4][2]]


def test_a_secret_in_the_arguments_raises_the_risk_and_is_redacted(decider: deciding.Decider) -> None:
    decision = ask(decider, "crm.lookup", {"customer": "c-1", "api_key": "sk-abcdefghijklmnopqrstuvwx"})
    assert decision.decision == "NEEDS_APPROVAL"
    assert decision.risk is not None and decision.risk["level"] == "RED"
    assert decision.risk["reasons"] == ["argument api_key holds a secret-like value: RED"]
    with decider.db.connect() as connection:
        payload = connection.execute(
            sa.select(tables.op_events.c.payload).where(tables.op_events.c.id == decision.decision_id)
        ).scalar_one()
    assert payload["args"] == {"customer": "c-1", "api_key": "[REDACTED]"}
    assert "sk-abc" not in str(payload)


def test_long_arguments_are_redacted_before_the_write_transaction_opens(decider: deciding.Decider) -> None:
    # A call that needs approval commits on its own, under the store's write lock: redacting a
    # megabyte of arguments inside it held every other decision's commit (0.2-1.3 s in a trial).
    # The decider's own histogram times that transaction: it must take a fraction of one
    # redaction of the same arguments (it took two, inside it). Best of three: load only adds.
    from reconciler.policy import risk
    from tests.timing import fastest

    held = []
    for i in range(3):
        args = {"note": "y" * 900_000 + f" sk-{i}" + "a" * 30}
        total = decider.write_seconds.total
        decision = ask(decider, "crm.lookup", args)
        assert decision.decision == "NEEDS_APPROVAL" and decision.approval_id is not None
        held.append(decider.write_seconds.total - total)
    _, redacting = fastest(lambda: risk.redact_args(args))
    assert min(held) < redacting / 3, (held, redacting)


def test_an_approved_call_is_allowed_exactly_once(decider: deciding.Decider) -> None:
    first = ask(decider, "payments.refund", {"amount": 20})
    assert first.decision == "NEEDS_APPROVAL" and first.approval_id is not None
    assert ask(decider, "payments.refund", {"amount": 20}).approval_id == first.approval_id  # polled, not requested twice
    assert ask(decider, "payments.refund", {"amount": 99}).approval_id != first.approval_id  # another call, another request
    with decider.db.begin() as connection:
        approving.decide(connection, first.approval_id, "alice", "APPROVE", "customer is right", NOW)
    granted = ask(decider, "payments.refund", {"amount": 20})
    assert (granted.decision, granted.reasons, granted.approval_id) == ("ALLOW", ["approved request"], first.approval_id)
    decider.clock.at = NOW + dt.timedelta(seconds=61)  # type: ignore[attr-defined]  # past the loop window
    again = ask(decider, "payments.refund", {"amount": 20})
    assert again.decision == "NEEDS_APPROVAL" and again.approval_id not in (None, first.approval_id)


def test_run_budgets_count_cost_events(decider: deciding.Decider) -> None:
    with decider.db.begin() as connection:
        opevents.add(
            connection,
            [
                {
                    "tenant": "acme",
                    "at": NOW,
                    "type": "COST",
                    "instance": "acme:app-dev-g1-0",
                    "payload": {"amount": 2.5, "runId": "r1"},
                }
            ],
        )
    assert ask(decider, "crm.lookup", cost_estimate=0.4, run_id="r1").decision == "ALLOW"
    over = ask(decider, "crm.lookup", cost_estimate=0.6, run_id="r1")
    assert over.reasons == ["BUDGET_EXCEEDED: the run would spend 3.10, above its budget 3.00"]
    assert ask(decider, "crm.lookup", cost_estimate=0.6, run_id="r2").decision == "ALLOW"


def test_the_same_call_repeated_past_the_threshold_is_a_loop(decider: deciding.Decider) -> None:
    args = {"customer": "c-9"}
    assert [ask(decider, "crm.lookup", args).decision for _ in range(3)] == ["ALLOW", "ALLOW", "ALLOW"]
    looping = ask(decider, "crm.lookup", args)
    assert looping.reasons == ["LOOP_DETECTED: the same call was made 3 times in the loop window (threshold 3)"]
    assert ask(decider, "crm.lookup", {"customer": "c-10"}).decision == "ALLOW"
    decider.clock.at = NOW + dt.timedelta(seconds=61)  # type: ignore[attr-defined]
    assert ask(decider, "crm.lookup", args).decision == "ALLOW"
    assert [name for name, _ in records(decider, "LOOP_DETECTED")] == ["acme:app-dev-g1-0"]


def test_held_instances_are_denied_and_read_only_ones_may_not_write(decider: deciding.Decider) -> None:
    with decider.db.begin() as connection:
        holds.control_instance(connection, "acme:app-dev-g1-0", "pause", "alice", "incident", NOW)
        holds.control_instance(connection, "acme:app-dev-g1-1", "read-only", "alice", "incident", NOW)
    assert ask(decider, "crm.lookup").reasons == ["instance acme:app-dev-g1-0 is PAUSED"]
    assert ask(decider, "crm.update", instance="acme:app-dev-g1-1").reasons == [
        "instance acme:app-dev-g1-1 is read-only and crm.update writes"
    ]
    assert ask(decider, "crm.lookup", instance="acme:app-dev-g1-1").decision == "ALLOW"


def test_a_version_without_its_envelope_fails_closed(decider: deciding.Decider) -> None:
    with decider.db.begin() as connection:
        connection.execute(tables.agent_versions.update().values(envelope=None))
    decision = ask(decider, "crm.lookup")
    assert (decision.decision, decision.reasons) == (
        "DENY",
        ["version app@1.0.0 has no effective envelope yet: apply the fleet again"],
    )


def test_instances_created_by_a_later_apply_of_the_same_commit_are_known(git_repo: GitRepo, db_url: str) -> None:
    # prod waits for an approval; the decider resolves the fleet; the approval bumps the state
    # generation; the apply of the same commit then creates prod's instance — which the
    # decider must know without a new commit.
    files = scenario.first_commit_files() | {
        "fleet/app/v1.yaml": scenario.version("1.0.0", "APPROVED"),
        "fleet/deploy-prod.yaml": scenario.deployment("app-prod", "prod", "1.0.0", 1),
    }
    git_repo.commit(files, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    scenario.evaluate(rec.db, "app@1.0.0")
    rec.apply("main")
    decider = deciding.Decider(rec.db, clock=Clock())  # type: ignore[arg-type]
    assert ask(decider, "crm.lookup", instance="acme:app-prod-g1-0").reasons == ["unknown instance"]
    ((approval_id,),) = scenario.rows(rec.db, tables.approvals, "id")
    with rec.db.begin() as connection:
        approving.decide(connection, approval_id, "alice", "APPROVE", "ship it", NOW)
    assert ask(decider, "crm.lookup", instance="acme:app-prod-g1-0").reasons == ["unknown instance"]
    rec.apply("main")
    assert ask(decider, "crm.lookup", instance="acme:app-prod-g1-0").decision == "ALLOW"


ESCALATING = (
    ENVELOPE
    + "  approvals: {approverRoles: [release-manager], ttlSeconds: 900, escalateAfterSeconds: 300, escalateTo: [viewer]}\n"
)


def test_approvals_escalate_when_undecided_and_expire_after_their_ttl(git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(
        scenario.first_commit_files() | {"fleet/base.yaml": CATALOG, "fleet/envelopes.yaml": ESCALATING}, author=AUTHOR
    )
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    decider = deciding.Decider(rec.db, clock=Clock())  # type: ignore[arg-type]

    def sweep(seconds: int) -> approving.Swept:
        with decider.db.begin() as connection:
            return approving.sweep(connection, NOW + dt.timedelta(seconds=seconds))

    first = ask(decider, "payments.refund", {"amount": 20})
    second = ask(decider, "payments.refund", {"amount": 99})
    assert first.approval_id is not None and second.approval_id is not None
    refused = f"holds viewer; approval {first.approval_id} needs one of release-manager"
    with pytest.raises(errors.Forbidden, match=refused), decider.db.begin() as connection:
        approving.decide(connection, first.approval_id, "victor", "APPROVE", "lgtm", NOW)
    assert sweep(299) == approving.Swept([], [])
    assert sweep(300) == approving.Swept([], [first.approval_id, second.approval_id])
    assert sweep(301) == approving.Swept([], [])  # escalated once
    assert [(name, after["roles"]) for name, after in records(decider, "APPROVAL_ESCALATED")] == [
        (str(first.approval_id), ["release-manager", "viewer"]),
        (str(second.approval_id), ["release-manager", "viewer"]),
    ]
    with decider.db.begin() as connection:  # the escalated role may decide now
        assert approving.decide(connection, first.approval_id, "victor", "APPROVE", "on call", NOW).status == "APPROVED"

    assert sweep(900) == approving.Swept([second.approval_id], [])  # the undecided one expires; the decided one stays
    assert [name for name, _ in records(decider, "APPROVAL_EXPIRED")] == [str(second.approval_id)]
    with decider.db.connect() as connection:
        statuses = dict(connection.execute(sa.select(tables.approvals.c.id, tables.approvals.c.status)).all())
    assert statuses == {first.approval_id: "APPROVED", second.approval_id: "EXPIRED"}
    with pytest.raises(errors.Conflict, match="is EXPIRED, not PENDING"), decider.db.begin() as connection:
        approving.decide(connection, second.approval_id, "alice", "APPROVE", "too late", NOW)
    decider.clock.at = NOW + dt.timedelta(seconds=901)  # type: ignore[attr-defined]
    retry = ask(decider, "payments.refund", {"amount": 99})  # asking again requests anew
    assert retry.decision == "NEEDS_APPROVAL" and retry.approval_id not in (None, second.approval_id)


DENY_UPDATES = """\
package arm.ext.team

import rego.v1

deny contains "crm.update is frozen" if input.tool.name == "crm.update"
"""


class Stepped(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.tick = 0.0

    def monotonic(self) -> float:
        return self.tick


def test_a_failed_opa_push_leaves_decisions_on_the_last_good_revision(git_repo: GitRepo, db_url: str) -> None:
    first_sha = git_repo.commit(
        scenario.first_commit_files() | {"fleet/base.yaml": CATALOG, "fleet/envelopes.yaml": ENVELOPE}, author=AUTHOR
    )
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    clock = Stepped()
    with OpaDouble() as double:
        decider = deciding.Decider(rec.db, engine=opa.OpaEngine(double.url), clock=clock)  # type: ignore[arg-type]
        before = ask(decider, "crm.update", {"id": 1})
        assert (before.decision, before.policy_revision) == ("ALLOW", first_sha)
        assert decider.policy_status()["failure"] is None

        second_sha = git_repo.commit({"fleet/policies/team.rego": DENY_UPDATES}, author=AUTHOR)
        rec.apply("main")
        double.state.refuse_writes = True
        stale = ask(decider, "crm.update", {"id": 2})
        assert (stale.decision, stale.policy_revision) == ("ALLOW", first_sha)  # the last good revision
        status = decider.policy_status()
        assert (status["engine"], status["loadedRevision"], status["failure"]["revision"]) == ("opa", first_sha, second_sha)
        assert "writes refused" in status["failure"]["message"]
        assert any(p.endswith("decision.rego") for p in double.state.policies)  # OPA still has the old revision
        assert not any(p.endswith("team.rego") for p in double.state.policies)

        double.state.refuse_writes = False
        assert ask(decider, "crm.update", {"id": 3}).policy_revision == first_sha  # no retry within 5 s
        clock.tick = 6.0
        after = ask(decider, "crm.update", {"id": 4})
        assert (after.decision, after.reasons, after.policy_revision) == ("DENY", ["crm.update is frozen"], second_sha)
        assert decider.policy_status()["failure"] is None
