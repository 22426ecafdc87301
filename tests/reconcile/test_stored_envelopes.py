"""Each version's effective envelope is computed when a commit is applied and stored with it."""

from __future__ import annotations

from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR

ENVELOPES = """\
apiVersion: arm/v1
kind: PolicyEnvelope
metadata: {name: tenant-rules}
spec:
  scope: {kind: Tenant, name: acme}
  maxRisk: YELLOW
  tools: {deny: [crm.lookup]}
---
apiVersion: arm/v1
kind: PolicyEnvelope
metadata: {name: app-rules}
spec:
  scope: {kind: AgentTemplate, name: app}
  budgets: {perCall: 0.5}
"""


def test_effective_envelopes_are_stored_and_follow_envelope_changes(git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit(scenario.first_commit_files() | {"fleet/envelopes.yaml": ENVELOPES}, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    scenario.assert_cached_state_is_true(rec)
    ((envelope, digest),) = scenario.rows(rec.db, scenario.tables.agent_versions, "envelope", "envelope_digest")
    assert envelope["maxRisk"] == "YELLOW"
    assert envelope["budgets"]["perCall"] == 0.5
    assert envelope["tools"]["deny"] == ["crm.lookup"]
    assert envelope["sources"] == ["tenant-rules", "app-rules"]
    mark = scenario.last_record_id(rec.db)

    git_repo.commit({"fleet/envelopes.yaml": ENVELOPES.replace("maxRisk: YELLOW", "maxRisk: RED")}, author=AUTHOR)
    rec.apply("main")
    scenario.assert_cached_state_is_true(rec)
    ((envelope, new_digest),) = scenario.rows(rec.db, scenario.tables.agent_versions, "envelope", "envelope_digest")
    assert envelope["maxRisk"] == "RED" and new_digest != digest
    assert scenario.records(rec.db, mark) == [("POLICY_UPDATED", "PolicyEnvelope", "tenant-rules")]
    assert rec.apply("main").outcome == "UNCHANGED"
