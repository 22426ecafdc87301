"""Objects that wait on gates: re-evaluated when a gate input changes, kept when none did."""

from __future__ import annotations

from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR, version

EXTRA_TOOL = scenario.BASE.replace(
    "tools: [{name: crm.lookup, risk: GREEN}]", "tools: [{name: crm.lookup, risk: GREEN}, {name: web.search, risk: GREEN}]"
)


def test_a_waiting_version_keeps_its_condition_across_unrelated_commits(git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(scenario.first_commit_files() | {"fleet/app/v1.yaml": version("1.0.0", "APPROVED")}, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    scenario.evaluate(rec.db, "app@1.0.0")
    first = rec.apply("main")
    assert first.plan is not None
    (waiting,) = [c for c in first.plan.conditions if c.kind == "AgentVersion"]
    assert waiting.reason == "ApprovalPending"
    mark = scenario.last_record_id(rec.db)

    # A change that feeds no gate: the stored condition is carried, nothing is evaluated or written for it.
    git_repo.commit({"fleet/base.yaml": EXTRA_TOOL}, author=AUTHOR)
    second = rec.apply("main")
    assert second.plan is not None
    assert [(c.kind, c.name, c.reason) for c in second.plan.conditions] == [("AgentVersion", "app@1.0.0", "ApprovalPending")]
    assert second.plan.condition_updates == {}
    assert scenario.records(rec.db, mark) == [("TOOL_CATALOG_UPDATED", "ToolCatalog", "tools")]
    mark = scenario.last_record_id(rec.db)

    # A change to a gate input (the template, which links the version to its project's
    # envelopes): the gate is asked again; same answer, so no new request and no new records.
    git_repo.commit({"fleet/app/template.yaml": scenario.TEMPLATE.replace("role: helps", "role: helps customers")}, author=AUTHOR)
    third = rec.apply("main")
    assert third.plan is not None
    assert [(c.name, c.reason) for c in third.plan.conditions] == [("app@1.0.0", "ApprovalPending")]
    assert scenario.records(rec.db, mark) == [("TEMPLATE_UPDATED", "AgentTemplate", "app")]
    (approval,) = scenario.rows(rec.db, scenario.tables.approvals, "id", "status")
    assert approval[1] == "PENDING"


def test_a_run_recorded_outside_git_unblocks_the_waiting_version_on_the_same_commit(git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(scenario.first_commit_files() | {"fleet/app/v1.yaml": version("1.0.0", "CANDIDATE")}, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    first = rec.apply("main")
    assert first.plan is not None
    assert [c.message.split(": ")[1] for c in first.plan.conditions] == ["waiting for evaluation"]
    assert rec.apply("main").outcome == "UNCHANGED"  # nothing changed: the same answer, nothing written

    # A failing run changes the gate's answer (the numbers), not the step.
    scenario.evaluate(rec.db, "app@1.0.0", metrics={"pass_rate": 0.5})
    failing = rec.apply("main")
    assert failing.plan is not None
    (waiting,) = failing.plan.conditions
    assert "capability suite qa scored 50.0% (needs 90%)" in waiting.message
    assert scenario.rows(rec.db, scenario.tables.agent_versions, "lifecycle") == [("TESTING",)]

    # The reconciler keeps the state it applied in memory: the run's generation bump tells it stale.
    scenario.evaluate(rec.db, "app@1.0.0")
    passed = rec.apply("main")
    assert passed.outcome == "APPLIED"
    assert scenario.rows(rec.db, scenario.tables.agent_versions, "lifecycle", "conditions") == [("CANDIDATE", [])]
    scenario.assert_cached_state_is_true(rec)
