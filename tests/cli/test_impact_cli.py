"""Decision impact as users run it over the sample fleet on a real database: ``armctl replay`` of
recorded decisions, ``events export`` and ``state export`` feeding a pull request's plan, the
plan's impact and changed fields, and a tenant that governs widening policy changes."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import sqlalchemy as sa

from reconciler.policy import replays
from reconciler.state import tables
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo

DEV = "acme:support-agent-dev-g1-0"
SECRET = "sk-live0123456789abcdefXYZ"
ENVELOPES = "fleet/envelopes.yaml"
SUPPORT_DENY = "deny: [payments.refund, payments.charge, orders.cancel, crm.delete-contact, k8s.scale-deployment, k8s.restart-pod"


def deny_kb_search(repo: GitRepo) -> str:
    """Commit a narrowing envelope edit: support agents may no longer search the knowledge base."""
    text = (repo.path / ENVELOPES).read_text()
    assert SUPPORT_DENY + "]" in text
    return repo.commit({ENVELOPES: text.replace(SUPPORT_DENY + "]", SUPPORT_DENY + ", kb.search-articles]")}, "deny kb search")


def decide(armctl: Armctl, tool: str, args: dict[str, object] | None = None) -> dict[str, object]:
    result = armctl("decide", "--instance", DEV, "--tool", tool, "--args", json.dumps(args or {}), "--format", "json")
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_replay_and_a_pull_request_plan_show_the_flips_of_an_envelope_edit(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    kb = [decide(armctl, "kb.search-articles", {"query": "refund"}) for _ in range(2)]
    assert [d["decision"] for d in kb] == ["ALLOW", "ALLOW"]
    assert decide(armctl, "web.search", {"q": "status", "api_key": SECRET})["decision"] == "DENY"  # RED: a secret
    legacy = decide(armctl, "docs.summarize")
    # A decision recorded before replay data was kept.
    with armctl.engine.begin() as connection:
        e = tables.op_events.c
        payload = connection.execute(sa.select(e.payload).where(e.id == legacy["decisionId"])).scalar_one()
        payload.pop("replay")
        connection.execute(tables.op_events.update().where(e.id == legacy["decisionId"]).values(payload=payload))
    deny_kb_search(sample_repo)

    replayed = armctl("replay", "--head", "HEAD", "--since", "1d", "--format", "json")
    assert replayed.returncode == 2, replayed.stderr
    report = replayed.json()
    assert report["replayed"] == 3
    assert (report["unreplayable"], report["unreplayableWhy"]) == (1, {replays.NO_REPLAY_DATA: 1})
    assert [
        (f["tool"], f["from"], f["to"], f["count"], f["widening"], f["byVersion"], f["byTenant"]) for f in report["flips"]
    ] == [("kb.search-articles", "ALLOW", "DENY", 2, False, {"support-agent@2.1.0": 2}, {"acme": 2})]
    assert report["flips"][0]["examples"] == [kb[0]["decisionId"], kb[1]["decisionId"]]
    assert armctl("replay", "--head", "HEAD", "--tenant", "other", "--format", "json").json()["replayed"] == 0

    # The pull request's CI has files, not the database.
    decisions, state = tmp_path / "decisions.jsonl.gz", tmp_path / "state.json"
    armctl.ok("events", "export", "--since", "7d", "--out", str(decisions))
    lines = gzip.decompress(decisions.read_bytes()).decode().splitlines()
    assert len(lines) == 4 and SECRET not in "".join(lines)
    armctl.ok("state", "export", "--out", str(state))
    assert SECRET not in state.read_text()

    planned = armctl("plan", "--base", "HEAD~1", "--head", "HEAD", "--replay", str(decisions), "--format", "json")
    assert planned.returncode == 2, planned.stderr
    plan = planned.json()
    flips = {(f["tool"], f["from"], f["to"], f["widening"]) for f in plan["impact"]["flips"]}
    assert flips == {("kb.search-articles", "ALLOW", "DENY", False), ("kb.search-articles", "NEEDS_APPROVAL", "DENY", False)}
    assert all(set(f["versions"]) <= {"support-agent@1.0.0", "support-agent@1.1.0", "support-agent@2.0.0", "support-agent@2.1.0"}
               for f in plan["impact"]["flips"])  # fmt: skip
    assert "support-agent@2.1.0" in plan["impact"]["flips"][0]["versions"]
    assert plan["replay"]["replayed"] == 3 and plan["replay"]["flips"][0]["count"] == 2
    (updated,) = [a for a in plan["actions"] if a["op"] == "update"]
    assert updated["name"] == "customer-support-guardrails"
    assert [(c["field"], c["after"][-1]) for c in updated["changes"]] == [("spec.tools.deny", "kb.search-articles")]
    assert plan["gates"] == "scratch"

    # Markdown: the impact section; on a scratch database no approval ids, and a note saying why.
    comment = armctl("plan", "--base", "HEAD~1", "--head", "HEAD", "--replay", str(decisions), "--format", "markdown")
    assert comment.returncode == 2
    assert "#### Decision impact" in comment.stdout and "ALLOW → DENY | `kb.search-articles`" in comment.stdout
    assert "spec.tools.deny: +kb.search-articles" in comment.stdout
    assert "Recorded decisions replayed" in comment.stdout
    assert re.search(r"approval \d+", comment.stdout) is None and "scratch database" in comment.stdout

    # With production's state the waiting gates carry production's approval ids.
    pending = {a["subject_name"]: a["id"] for a in armctl.json("approvals", "list") if a["subject_kind"] == "AgentVersion"}
    assert pending
    real = armctl("plan", "--base", "HEAD~1", "--head", "HEAD", "--state", str(state), "--format", "json").json()
    assert real["gates"] == "state"
    waiting = {w["name"]: w["message"] for w in real["waiting"] if w["kind"] == "AgentVersion"}
    for version, approval_id in pending.items():
        assert f"(approval {approval_id})" in waiting[version]

    # A plain plan compares against what the database applied; head == base changes no decision.
    plain = armctl("plan", "--format", "json")
    assert plain.returncode == 2
    assert {f["tool"] for f in plain.json()["impact"]["flips"]} == {"kb.search-articles"}
    same = armctl("plan", "--base", "HEAD", "--head", "HEAD", "--format", "markdown")
    assert same.returncode == 0, same.stderr
    assert "**No decision changes.**" in same.stdout and re.search(r"approval \d+", same.stdout) is None


def test_a_widening_policy_change_waits_for_its_approval_and_a_narrowing_one_does_not(
    tmp_path: Path, db_url: str, sample_repo: GitRepo
) -> None:
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    tenant = (sample_repo.path / "fleet/tenant.yaml").read_text()
    rule = "  policyChanges:\n    widening:\n      requiredApprovals: 1\n      approverRoles: [release-manager]\n"
    sample_repo.commit(
        {
            "fleet/tenant.yaml": tenant.replace(
                "  contact: platform-team@acme.example\n", "  contact: platform-team@acme.example\n" + rule, 1
            )
        }
    )
    assert armctl.json("apply")["outcome"] == "APPLIED"

    narrowing = deny_kb_search(sample_repo)
    assert armctl.json("apply")["outcome"] == "APPLIED"  # at once
    assert decide(armctl, "kb.search-articles")["decision"] == "DENY"

    text = (sample_repo.path / ENVELOPES).read_text()
    widening = sample_repo.commit({ENVELOPES: text.replace(", kb.search-articles]", "]")}, "allow kb search again")
    planned = armctl("plan", "--format", "json").json()["impact"]
    assert planned["widening"] > 0
    assert planned["waitsForApproval"] == [{"tenant": "acme", "requiredApprovals": 1, "approverRoles": ["release-manager"]}]
    held = armctl.json("apply")
    assert held["outcome"] == "WAITING"
    (condition,) = [w for w in held["waiting"] if w["kind"] == "PolicyChange"]
    assert condition["tenant"] == "acme" and condition["name"] == widening
    assert "DENY → ALLOW kb.search-articles" in condition["message"]
    (approval,) = [a for a in armctl.json("approvals", "list") if a["subject_kind"] == "PolicyChange"]
    assert (approval["subject_name"], approval["status"]) == (widening, "PENDING")
    assert f"(approval {approval['id']})" in condition["message"]
    requested = armctl.json("history", "--type", "APPROVAL_REQUESTED", "--kind", "Approval", "--name", str(approval["id"]))
    assert len(requested) == 1
    # Nothing of the commit applied: the narrowed policy still decides; asking again requests nothing new.
    assert decide(armctl, "kb.search-articles")["decision"] == "DENY"
    assert armctl.json("apply")["outcome"] == "WAITING"
    assert len([a for a in armctl.json("approvals", "list") if a["subject_kind"] == "PolicyChange"]) == 1

    armctl.ok("approvals", "approve", str(approval["id"]), "--as", "maya-chen", "-m", "search is read-only")
    assert armctl.json("apply")["outcome"] == "APPLIED"
    assert decide(armctl, "kb.search-articles")["decision"] == "ALLOW"
    assert narrowing != widening


def test_a_policy_change_that_changes_no_object_still_changes_the_plan(tmp_path: Path, db_url: str, sample_repo: GitRepo) -> None:
    # Only a fleet Rego rule changes: nothing to create or update, but decisions flip, and a CI
    # job that gates on exit 2 must see it.
    armctl = applied_sample(tmp_path, db_url, sample_repo)
    rule = 'package arm.ext.extra\n\nimport rego.v1\n\ndeny contains "no articles" if input.tool.name == "kb.get-article"\n'
    sample_repo.commit({"fleet/policies/extra.rego": rule}, "deny kb.get-article")
    for args in (("--base", "HEAD~1", "--head", "HEAD"), ()):
        planned = armctl("plan", *args, "--format", "json")
        assert planned.returncode == 2, planned.stderr
        report = planned.json()
        assert (report["changes"], report["exitCode"], report["impact"]["changed"]) == (0, 2, True)
        text = armctl("plan", *args)
        assert text.returncode == 2 and "No object changes, but decisions change" in text.stdout
        assert "No changes." not in text.stdout
    comment = armctl("plan", "--base", "HEAD~1", "--head", "HEAD", "--format", "markdown")
    assert comment.returncode == 2 and "**No object changes, but decisions change" in comment.stdout
    assert armctl("plan", "--base", "HEAD~1", "--head", "HEAD", "--no-impact").returncode == 0
