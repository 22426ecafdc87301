"""``armctl instance list | show | <control>`` and ``armctl tenant <control>`` as a user runs them:
a real process over the sample fleet applied to a real database, checked in the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo

#: An operator whose role holds every instance control (a wildcard), next to the sample's people.
INCIDENT_COMMANDER = """\
apiVersion: arm/v1
kind: Role
metadata:
  name: incident-commander
spec:
  permissions: ["instances:*"]
---
apiVersion: arm/v1
kind: Operator
metadata:
  name: ines-costa
spec:
  email: ines.costa@acme.example
  roles: [incident-commander]
"""

DEV = "acme:support-agent-dev-g1-0"
STAGING = "acme:support-agent-staging-g1-0"


@pytest.fixture
def armctl(tmp_path: Path, sample_repo: GitRepo, db_url: str) -> Iterator[Armctl]:
    sample_repo.commit({"fleet/incident.yaml": INCIDENT_COMMANDER}, "an incident commander")
    applied = applied_sample(tmp_path, db_url, sample_repo)
    yield applied
    applied.engine.dispose()


def states(armctl: Armctl) -> dict[str, tuple[str, str | None]]:
    i = tables.instances.c
    return {r["id"]: (r["state"], r["held_by"]) for r in armctl.rows(sa.select(i.id, i.state, i.held_by))}


def records(armctl: Armctl, after_id: int = 0) -> list[dict[str, object]]:
    c = tables.change_records.c
    query = sa.select(c.id, c.type, c.object_kind, c.object_name, c.before, c.after, c.operator).where(c.id > after_id)
    return armctl.rows(query.order_by(c.id))


def last_record_id(armctl: Armctl) -> int:
    return max(int(r["id"]) for r in records(armctl))  # type: ignore[call-overload]


def test_instance_list_offers_the_filters_of_the_api(armctl: Armctl) -> None:
    everything = armctl.json("instance", "list")
    assert [r["id"] for r in everything] == sorted(states(armctl))
    assert set(everything[0]) == {
        "id", "tenant", "deployment", "environment", "template", "version", "state", "held_by", "health", "last_heartbeat", "tenant_hold",
    }  # fmt: skip
    dev = armctl.json("instance", "list", "--environment", "dev")
    assert {(r["environment"], r["state"]) for r in dev} == {("dev", "ACTIVE")} and len(dev) == 3
    waiting = armctl.json("instance", "list", "--state", "provisioning", "--tenant", "acme")
    assert {r["environment"] for r in waiting} == {"staging"} and len(waiting) == 3
    assert [r["id"] for r in armctl.json("instance", "list", "--deployment", "support-agent-staging")] == [
        STAGING,
        "acme:support-agent-staging-g1-1",
    ]
    text = armctl.ok("instance", "list", "--environment", "dev").stdout
    assert DEV in text and "support-agent@2.1.0" in text and "ACTIVE" in text
    assert armctl.ok("instance", "list", "--tenant", "globex").stdout == "No instances match.\n"


def test_pausing_an_instance_records_it_holds_it_against_git_and_resume_releases_it(armctl: Armctl) -> None:
    since = last_record_id(armctl)
    paused = armctl.ok("instance", "pause", DEV, "--operator", "priya-nair", "-m", "answers in a loop")
    assert f"Instance {DEV}: ACTIVE → PAUSED (pause by priya-nair)." in paused.stdout
    assert states(armctl)[DEV] == ("PAUSED", "pause")
    (record,) = records(armctl, since)
    assert (record["type"], record["object_kind"], record["object_name"], record["operator"]) == (
        "EMERGENCY_PAUSE",
        "Instance",
        DEV,
        "priya-nair",
    )
    assert record["before"] == {"state": "ACTIVE"}
    assert record["after"] == {"state": "PAUSED", "control": "pause", "reason": "answers in a loop"}

    shown = armctl.ok("instance", "show", DEV).stdout
    assert "PAUSED (held by pause)" in shown and "EMERGENCY_PAUSE" in shown and "by priya-nair: answers in a loop" in shown
    detail = armctl.json("instance", "show", DEV)
    assert (detail["state"], detail["held_by"], detail["history"][-1]["type"]) == ("PAUSED", "pause", "EMERGENCY_PAUSE")

    armctl.repo.commit(message="an unrelated change")
    armctl.ok("apply")
    assert states(armctl)[DEV] == ("PAUSED", "pause")  # Git does not undo the control

    resumed = armctl.json("instance", "resume", DEV, "--as", "priya-nair", "-m", "fixed")
    assert resumed == {"instance": DEV, "before": "PAUSED", "after": "ACTIVE"}
    assert states(armctl)[DEV] == ("ACTIVE", None)
    assert records(armctl, last_record_id(armctl) - 1)[-1]["type"] == "INSTANCE_TRANSITIONED"


@pytest.mark.parametrize(
    "steps",
    [
        # (control, instance, operator, before, after, record type)
        [
            ("read-only", DEV, "ines-costa", "ACTIVE", "READONLY", "INSTANCE_TRANSITIONED"),
            ("drain", DEV, "ines-costa", "READONLY", "DRAINING", "INSTANCE_TRANSITIONED"),
            ("quarantine", STAGING, "dev-patel", "PROVISIONING", "QUARANTINED", "EMERGENCY_QUARANTINE"),
        ]
    ],
)
def test_each_instance_control_moves_the_instance_and_writes_its_change_record(
    armctl: Armctl, steps: list[tuple[str, str, str, str, str, str]]
) -> None:
    for control, instance, operator, before, after, record_type in steps:
        since = last_record_id(armctl)
        answer = armctl.json("instance", control, instance, "--operator", operator, "-m", f"{control} drill")
        assert answer == {"instance": instance, "before": before, "after": after}
        assert states(armctl)[instance][0] == after
        (record,) = records(armctl, since)
        assert (record["type"], record["object_name"], record["operator"]) == (record_type, instance, operator)
        assert record["after"] == {"state": after, "control": control, "reason": f"{control} drill"}


def test_a_refused_control_exits_1_naming_what_was_refused_and_changes_nothing(armctl: Armctl) -> None:
    before, since = states(armctl), last_record_id(armctl)
    assert armctl.refused("instance", "quarantine", DEV, "--operator", "priya-nair", "-m", "x") == (
        f"Forbidden: cannot quarantine instance '{DEV}': operator 'priya-nair' lacks permission instances:quarantine "
        "in tenant 'acme'"
    )
    assert armctl.refused("instance", "pause", DEV, "--operator", "nobody", "-m", "x") == (
        f"Forbidden: cannot pause instance '{DEV}': operator 'nobody' is not declared in tenant 'acme'"
    )
    assert armctl.refused("instance", "drain", STAGING, "--operator", "ines-costa", "-m", "x") == (
        f"IllegalTransition: cannot drain instance '{STAGING}': Instance cannot go from PROVISIONING to DRAINING; "
        "allowed next states: ACTIVE, PAUSED, QUARANTINED, RETIRED"
    )
    assert armctl.refused("instance", "resume", "acme:bogus", "--operator", "priya-nair", "-m", "x") == (
        "NotFound: instance 'acme:bogus' does not exist"
    )
    assert armctl.refused("instance", "show", "acme:bogus") == "NotFound: instance 'acme:bogus' does not exist"
    assert states(armctl) == before and records(armctl, since) == []


def test_a_control_needs_an_operator_and_a_reason(armctl: Armctl) -> None:
    assert "Missing option '--reason' / '-m'" in armctl.refused("instance", "pause", DEV, "--operator", "priya-nair")
    assert "Invalid value for '--reason' / '-m'" in armctl.refused(
        "instance", "pause", DEV, "--operator", "priya-nair", "-m", " "
    )
    assert "Missing option '--operator'" in armctl.refused("instance", "pause", DEV, "-m", "why")
    assert states(armctl)[DEV] == ("ACTIVE", None)


def test_the_tenant_kill_switch_holds_every_instance_and_resume_releases_them(armctl: Armctl) -> None:
    since = last_record_id(armctl)
    pulled = armctl.ok("tenant", "pause", "acme", "--operator", "dev-patel", "-m", "credential leak")
    assert "Tenant acme: kill switch pulled (pause) by dev-patel; 6 instances paused." in pulled.stdout
    assert any(line.split() == [STAGING, "PROVISIONING", "→", "PAUSED"] for line in pulled.stdout.splitlines())
    assert {state for state, held_by in states(armctl).values() if held_by} == {"PAUSED"}
    assert all(held_by for _, held_by in states(armctl).values())
    paused = [r for r in records(armctl, since) if r["object_kind"] == "Instance"]
    assert sorted(str(r["object_name"]) for r in paused) == sorted(states(armctl))
    assert {(r["type"], r["operator"], r["after"]["reason"]) for r in paused} == {  # type: ignore[index]
        ("EMERGENCY_PAUSE", "dev-patel", "credential leak")
    }

    released = armctl.json("tenant", "resume", "acme", "--operator", "dev-patel", "-m", "rotated")
    assert released["tenant"] == "acme"
    assert sorted(d["instance"] for d in released["instances"]) == sorted(states(armctl))
    # Staging's instances never started (no heartbeat yet): resume gives them back to
    # PROVISIONING, not ACTIVE; dev's were activated at once and run again.
    expected = {iid: "PROVISIONING" if "-staging-" in iid else "ACTIVE" for iid in states(armctl)}
    assert {d["instance"]: d["after"] for d in released["instances"]} == expected
    assert states(armctl) == {iid: (state, None) for iid, state in expected.items()}


def test_the_kill_switch_refuses_an_operator_without_the_permission_and_an_unknown_tenant(armctl: Armctl) -> None:
    before, since = states(armctl), last_record_id(armctl)
    refused = armctl.refused("tenant", "pause", "acme", "--operator", "jordan-reyes", "-m", "x")
    assert refused.startswith("Forbidden: ") and "operator 'jordan-reyes' lacks permission" in refused and "acme" in refused
    assert armctl.refused("tenant", "quarantine", "nosuch", "--operator", "dev-patel", "-m", "x") == (
        "NotFound: tenant 'nosuch' is not declared in the applied fleet"
    )
    assert states(armctl) == before and records(armctl, since) == []
