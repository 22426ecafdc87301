"""The planner as a table: ``plan(desired, actual)`` with no Git and no database.

Each row is a commit (files held in memory, read by the real loader) and an actual state built as
plain rows, and the plan expected of them: its actions as ``(op, kind, name, record)`` with
before → after where it matters, and its conditions. The gates are the real Rego library on the
embedded engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from reconciler.desired import snapshot as snapshot_
from reconciler.policy import engines, library
from reconciler.reconcile import actions, planning
from reconciler.state import actual as actual_
from tests.reconcile import memory, scenario
from tests.reconcile.canaries import STAGING, canary
from tests.reconcile.scenario import deployment, version

FLEET: dict[str, str] = {
    "fleet/base.yaml": scenario.BASE,
    "fleet/app/template.yaml": scenario.TEMPLATE,
    "fleet/app/prompts/v1.md": "You help.\n",
    "fleet/app/prompts/v2.md": "You help, briefly.\n",
}

#: Every object of ``scenario.BASE`` and the template, as the planner creates them, in order.
BASE_CREATED = [
    ("create", "Tenant", "acme", "TENANT_BOOTSTRAPPED"),
    ("create", "Project", "apps", "PROJECT_CREATED"),
    ("create", "Environment", "dev", "ENVIRONMENT_CREATED"),
    ("create", "Environment", "prod", "ENVIRONMENT_CREATED"),
    ("create", "Role", "release-manager", "ROLE_CREATED"),
    ("create", "Role", "viewer", "ROLE_CREATED"),
    ("create", "Operator", "alice", "OPERATOR_CREATED"),
    ("create", "Operator", "victor", "OPERATOR_CREATED"),
    ("create", "ToolCatalog", "tools", "TOOL_CATALOG_CREATED"),
    ("create", "AgentTemplate", "app", "TEMPLATE_CREATED"),
    ("create", "EvaluationSuite", "qa", "EVALUATION_SUITE_CREATED"),
]


def fleet(**files: str) -> dict[str, str]:
    """The base fleet and the template plus ``files`` (keyword: file name under fleet/)."""
    return FLEET | {f"fleet/{name.replace('__', '/')}.yaml": text for name, text in files.items()}


def applied(snap: snapshot_.Snapshot, **lifecycles: str) -> actual_.Actual:
    """The actual state a database holds once ``snap`` is applied: every object ACTIVE at its
    digest, versions at their declared lifecycle unless ``lifecycles`` (name → state) says
    otherwise. Deployment records and instances are added by the rows that need them."""
    objects = {}
    for n, obj in enumerate(snap.objects.values(), start=1):
        row = actual_.ObjectRow(n, obj.kind, obj.tenant, obj.name, obj.doc.digest, "ACTIVE")
        if obj.kind == "AgentVersion":
            lifecycle = lifecycles.get(obj.name, obj.doc.lifecycle)
            row = row._replace(
                lifecycle=lifecycle,
                genome_hash=snap.genome_hashes[(obj.tenant, obj.name)],
                integrity="OK",
                template=obj.doc.template,
            )
        objects[obj.key] = row
    return actual_.Actual(applied_sha="0" * 40, objects=objects)


def evaluated(
    build: Callable[[snapshot_.Snapshot], actual_.Actual], *names: str, suite: str = "qa", samples: int = 100, **metrics: float
) -> Callable[[snapshot_.Snapshot], actual_.Actual]:
    """``build``'s state with a run of ``suite`` recorded against each version's genome hash
    (metrics: passing suite qa unless given)."""

    def with_runs(snap: snapshot_.Snapshot) -> actual_.Actual:
        actual = build(snap)
        for name in names:
            runs = actual.evaluations.setdefault(("acme", name, suite), [])
            genome = snap.genome_hashes[("acme", name)]
            runs.append(actual_.RunRow(len(runs) + 1, suite, genome, metrics or dict(scenario.PASSING), samples))
        return actual

    return with_runs


#: A safety suite whose failing run keeps the version's new deployments waiting.
SAFETY_SUITE = """\
apiVersion: arm/v1
kind: EvaluationSuite
metadata: {name: jailbreak}
spec:
  category: safety
  metrics: [{name: refusal_rate, threshold: 1.0}]
  appliesTo: {templates: [app]}
  requiredFor: {steps: []}
  onFailure: readonly
"""


def record(
    id_: int, name: str, version_: str, replicas: int, *, state: str = "ACTIVE", generation: int = 1, **more: Any
) -> actual_.DeploymentRecord:
    strategy = more.pop("strategy", {"type": "AllAtOnce", "steps": [], "autoRollback": False})
    environment = more.pop("environment", "dev")
    return actual_.DeploymentRecord(
        id_, "acme", name, generation, "app", environment, version_, more.pop("previous", None), replicas, strategy, state, **more
    )


def instances(rec: actual_.DeploymentRecord, *states: str, held_by: str | None = None) -> list[actual_.InstanceRow]:
    return [
        actual_.InstanceRow(f"acme:{rec.name}-g{rec.generation}-{i}", "acme", rec.id, rec.name, rec.version, s, held_by)
        for i, s in enumerate(states)
    ]


@dataclasses.dataclass
class Row:
    files: dict[str, str]
    #: the actual state, from the commit's snapshot (None: an empty database)
    actual: Callable[[snapshot_.Snapshot], actual_.Actual] | None
    #: (op, kind, name, record), or with (before, after) appended where the row pins them
    actions: list[tuple[Any, ...]]
    #: (kind, name, type, reason, message)
    conditions: list[tuple[str, str, str, str, str]] = dataclasses.field(default_factory=list)
    health: dict[str, str] = dataclasses.field(default_factory=dict)


def _with_deployment(
    snap: snapshot_.Snapshot, records: list[actual_.DeploymentRecord], live: list[actual_.InstanceRow], **lifecycles: str
) -> actual_.Actual:
    actual = applied(snap, **lifecycles)
    for r in records:
        actual.deployments.setdefault((r.tenant, r.name), []).append(r)
    for i in live:
        actual.instances.setdefault(i.deployment_id, []).append(i)
        actual.instance_counts[i.deployment_id] = actual.instance_counts.get(i.deployment_id, 0) + 1
    return actual


def _changed_digest(kind: str, name: str) -> Callable[[snapshot_.Snapshot], actual_.Actual]:
    def build(snap: snapshot_.Snapshot) -> actual_.Actual:
        actual = applied(snap)
        key = (kind, "acme", name)
        actual.objects[key] = actual.objects[key]._replace(digest="sha256:" + "9" * 64)
        return actual

    return build


def _extra(kind: str, name: str) -> Callable[[snapshot_.Snapshot], actual_.Actual]:
    def build(snap: snapshot_.Snapshot) -> actual_.Actual:
        actual = applied(snap)
        actual.objects[(kind, "acme", name)] = actual_.ObjectRow(999, kind, "acme", name, "sha256:" + "8" * 64, "ACTIVE")
        return actual

    return build


V1 = version("1.0.0", "DRAFT")
V1_HASH = memory.snapshot_of(FLEET | {"fleet/app/v1.yaml": V1}).genome_hashes[("acme", "app@1.0.0")]
DEV_1 = record(1, "app-dev", "app@1.0.0", 1)
STAGING_CANARY = {"type": "Canary", "steps": [10, 50, 100], "autoRollback": False}

ROWS: dict[str, Row] = {
    "a new fleet: every object created, in kind order": Row(
        fleet(app__v1=V1),
        None,
        [*BASE_CREATED, ("create", "AgentVersion", "app@1.0.0", "VERSION_CREATED")],
    ),
    "a changed manifest: one update": Row(
        fleet(app__v1=V1),
        _changed_digest("Environment", "dev"),
        [("update", "Environment", "dev", "ENVIRONMENT_UPDATED")],
    ),
    "the same commit again: nothing": Row(fleet(app__v1=V1), applied, []),
    "a manifest removed: its object retired, never deleted": Row(
        fleet(app__v1=V1),
        _extra("Role", "auditor"),
        [("retire", "Role", "auditor", "ROLE_RETIRED", {"status": "ACTIVE"}, {"status": "RETIRED"})],
    ),
    "DRAFT → TESTING: no gate": Row(
        fleet(app__v1=version("1.0.0", "TESTING")),
        lambda s: applied(s, **{"app@1.0.0": "DRAFT"}),
        [("transition", "AgentVersion", "app@1.0.0", "VERSION_TRANSITIONED", {"lifecycle": "DRAFT"}, {"lifecycle": "TESTING"})],
    ),
    "TESTING → DRAFT: a failed evaluation sends it back": Row(
        fleet(app__v1=version("1.0.0", "DRAFT")),
        lambda s: applied(s, **{"app@1.0.0": "TESTING"}),
        [("transition", "AgentVersion", "app@1.0.0", "VERSION_TRANSITIONED", {"lifecycle": "TESTING"}, {"lifecycle": "DRAFT"})],
    ),
    "TESTING → CANDIDATE: no recorded run: it waits, naming the suite and the genome": Row(
        fleet(app__v1=version("1.0.0", "CANDIDATE")),
        lambda s: applied(s, **{"app@1.0.0": "TESTING"}),
        [],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "GateNotMet",
                f"TESTING -> CANDIDATE: waiting for evaluation: capability suite qa has no run on {V1_HASH}",
            )
        ],
    ),
    "TESTING → CANDIDATE: evaluations stated in the manifest are not evidence": Row(
        fleet(
            app__v1=version("1.0.0", "CANDIDATE")
            + "  evaluations:\n    - {suite: qa, score: 1.0, threshold: 0.9, passed: true}\n"
        ),
        lambda s: applied(s, **{"app@1.0.0": "TESTING"}),
        [],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "GateNotMet",
                f"TESTING -> CANDIDATE: waiting for evaluation: capability suite qa has no run on {V1_HASH}",
            )
        ],
    ),
    "TESTING → CANDIDATE: a failing run waits with its numbers": Row(
        fleet(app__v1=version("1.0.0", "CANDIDATE")),
        evaluated(lambda s: applied(s, **{"app@1.0.0": "TESTING"}), "app@1.0.0", pass_rate=0.85),
        [],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "GateNotMet",
                f"TESTING -> CANDIDATE: waiting for evaluation: capability suite qa scored 85.0% (needs 90%) on {V1_HASH}",
            )
        ],
    ),
    "TESTING → CANDIDATE: a run with too few samples is missing evidence": Row(
        fleet(app__v1=version("1.0.0", "CANDIDATE")),
        evaluated(lambda s: applied(s, **{"app@1.0.0": "TESTING"}), "app@1.0.0", samples=9),
        [],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "GateNotMet",
                f"TESTING -> CANDIDATE: waiting for evaluation: capability suite qa has no run with at least 10 samples on {V1_HASH} (run 1 had 9)",
            )
        ],
    ),
    "TESTING → CANDIDATE: with no suite required for the step, it waits (no evidence, no promotion)": Row(
        fleet(app__v1=version("1.0.0", "CANDIDATE")) | {"fleet/app/template.yaml": scenario.TEMPLATE.split("---")[0]},
        lambda s: applied(s, **{"app@1.0.0": "TESTING"}),
        [],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "GateNotMet",
                "TESTING -> CANDIDATE: waiting for evaluation: no EvaluationSuite is required for TESTING -> CANDIDATE of template app",
            )
        ],
    ),
    "a deployment of a version whose safety run failed waits for a passing run": Row(
        fleet(app__v1=V1, safety=SAFETY_SUITE, deploy=deployment("app-dev", "dev", "1.0.0", 1)),
        evaluated(applied, "app@1.0.0", suite="jailbreak", refusal_rate=0.99),
        [],
        [
            (
                "Deployment",
                "app-dev",
                "Waiting",
                "GateNotMet",
                f"none -> app@1.0.0: waiting for evaluation: safety suite jailbreak scored 99.0% (needs 100%) on {V1_HASH}",
            )
        ],
    ),
    "TESTING → CANDIDATE: a passing recorded run lets it through": Row(
        fleet(app__v1=version("1.0.0", "CANDIDATE")),
        evaluated(lambda s: applied(s, **{"app@1.0.0": "TESTING"}), "app@1.0.0"),
        [
            (
                "transition",
                "AgentVersion",
                "app@1.0.0",
                "VERSION_TRANSITIONED",
                {"lifecycle": "TESTING"},
                {"lifecycle": "CANDIDATE"},
            )
        ],
    ),
    "CANDIDATE → APPROVED: waits for an approval, requested once": Row(
        fleet(app__v1=version("1.0.0", "APPROVED")),
        lambda s: applied(s, **{"app@1.0.0": "CANDIDATE"}),
        [("request-approval", "Approval", "AgentVersion/app@1.0.0", "APPROVAL_REQUESTED")],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "ApprovalPending",
                "CANDIDATE -> APPROVED: waiting for 1 approval from release-manager",
            )
        ],
    ),
    "DRAFT → APPROVED: one legal step at a time, each its own record, up to the gate": Row(
        fleet(app__v1=version("1.0.0", "APPROVED")),
        evaluated(lambda s: applied(s, **{"app@1.0.0": "DRAFT"}), "app@1.0.0"),
        [
            ("transition", "AgentVersion", "app@1.0.0", "VERSION_TRANSITIONED", {"lifecycle": "DRAFT"}, {"lifecycle": "TESTING"}),
            (
                "transition",
                "AgentVersion",
                "app@1.0.0",
                "VERSION_TRANSITIONED",
                {"lifecycle": "TESTING"},
                {"lifecycle": "CANDIDATE"},
            ),
            ("request-approval", "Approval", "AgentVersion/app@1.0.0", "APPROVAL_REQUESTED"),
        ],
        [
            (
                "AgentVersion",
                "app@1.0.0",
                "Waiting",
                "ApprovalPending",
                "CANDIDATE -> APPROVED: waiting for 1 approval from release-manager",
            )
        ],
    ),
    "APPROVED → DEPRECATED → RETIRED": Row(
        fleet(app__v1=version("1.0.0", "RETIRED")),
        lambda s: applied(s, **{"app@1.0.0": "APPROVED"}),
        [
            (
                "transition",
                "AgentVersion",
                "app@1.0.0",
                "VERSION_TRANSITIONED",
                {"lifecycle": "APPROVED"},
                {"lifecycle": "DEPRECATED"},
            ),
            (
                "transition",
                "AgentVersion",
                "app@1.0.0",
                "VERSION_TRANSITIONED",
                {"lifecycle": "DEPRECATED"},
                {"lifecycle": "RETIRED"},
            ),
        ],
    ),
    "a deployment to an environment whose admission the version does not meet waits": Row(
        fleet(app__v1=version("1.0.0", "TESTING"), deploy=deployment("app-prod", "prod", "1.0.0", 1)),
        applied,
        [],
        [
            (
                "Deployment",
                "app-prod",
                "Waiting",
                "GateNotMet",
                "none -> app@1.0.0: waiting for version app@1.0.0 to reach APPROVED (it is TESTING)",
            )
        ],
    ),
    "a new deployment: a record, activated, its replicas provisioned": Row(
        fleet(app__v1=V1, deploy=deployment("app-dev", "dev", "1.0.0", 1)),
        lambda s: applied(s) | _without("Deployment", "app-dev"),
        [
            ("create", "Deployment", "app-dev", "DEPLOYMENT_DECLARED"),
            ("deploy", "Deployment", "app-dev", "DEPLOYMENT_CREATED"),
            ("record-state", "Deployment", "app-dev", "DEPLOYMENT_ACTIVATED"),
            ("provision", "Instance", "acme:app-dev-g1-0", "INSTANCE_CREATED"),
            (
                "instance-state",
                "Instance",
                "acme:app-dev-g1-0",
                "INSTANCE_TRANSITIONED",
                {"state": "PROVISIONING"},
                {"state": "ACTIVE"},
            ),
        ],
    ),
    "scaling up: one more instance, the record rescaled": Row(
        fleet(app__v1=V1, deploy=deployment("app-dev", "dev", "1.0.0", 2)),
        lambda s: _with_deployment(s, [DEV_1], instances(DEV_1, "ACTIVE")),
        [
            (
                "record-replicas",
                "Deployment",
                "app-dev",
                "DEPLOYMENT_SCALED",
                {"generation": 1, "replicas": 1},
                {"generation": 1, "replicas": 2},
            ),
            ("provision", "Instance", "acme:app-dev-g1-1", "INSTANCE_CREATED"),
            (
                "instance-state",
                "Instance",
                "acme:app-dev-g1-1",
                "INSTANCE_TRANSITIONED",
                {"state": "PROVISIONING"},
                {"state": "ACTIVE"},
            ),
        ],
    ),
    "held drift: Git moves the version, an emergency control keeps the old instance": Row(
        fleet(
            app__v1=V1,
            app__v2=version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
            deploy=deployment("app-dev", "dev", "2.0.0", 1),
        ),
        lambda s: _with_deployment(s, [DEV_1], instances(DEV_1, "PAUSED", held_by="alice")),
        [
            ("deploy", "Deployment", "app-dev", "DEPLOYMENT_CREATED"),
            ("record-state", "Deployment", "app-dev", "DEPLOYMENT_ACTIVATED"),
            ("provision", "Instance", "acme:app-dev-g2-0", "INSTANCE_CREATED"),
            (
                "instance-state",
                "Instance",
                "acme:app-dev-g2-0",
                "INSTANCE_TRANSITIONED",
                {"state": "PROVISIONING"},
                {"state": "ACTIVE"},
            ),
            # the old record retires; its held instance stays as the control left it
            (
                "record-state",
                "Deployment",
                "app-dev",
                "DEPLOYMENT_RETIRED",
                {"generation": 1, "state": "ACTIVE"},
                {"generation": 1, "state": "RETIRED"},
            ),
        ],
        [
            (
                "Deployment",
                "app-dev",
                "Held",
                "EmergencyHold",
                "instance acme:app-dev-g1-0 is PAUSED by an emergency control (alice); Git wants it retired, the control wins until it is released",
            )
        ],
    ),
    "a canary whose instances are healthy takes its next step": Row(
        fleet(
            base_staging=STAGING.removeprefix("---\n"),
            app__v1=V1,
            app__v2=version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
            deploy=canary("2.0.0", replicas=2),
        ),
        lambda s: _with_deployment(
            s,
            [
                record(1, "app-staging", "app@1.0.0", 2, environment="staging"),
                record(
                    2,
                    "app-staging",
                    "app@2.0.0",
                    2,
                    generation=2,
                    environment="staging",
                    previous="app@1.0.0",
                    strategy=STAGING_CANARY,
                    rollout="PROGRESSING",
                    canary_step=1,
                ),
            ],
            [
                *instances(record(1, "app-staging", "app@1.0.0", 2, environment="staging"), "ACTIVE"),
                *instances(record(2, "app-staging", "app@2.0.0", 2, generation=2, environment="staging"), "ACTIVE"),
            ],
        ),
        [
            (
                "record-rollout",
                "Deployment",
                "app-staging",
                "DEPLOYMENT_CANARY_STEPPED",
                {"generation": 2, "weight": 50, "step": 2, "instances": 1},
                {"generation": 2, "weight": 100, "step": 3, "instances": 2, "rollout": "COMPLETE"},
            ),
            # at 100% the canary serves every replica: one more instance (staging activates on a
            # heartbeat), and the previous record retires with its instance drained
            ("provision", "Instance", "acme:app-staging-g2-1", "INSTANCE_CREATED"),
            (
                "record-state",
                "Deployment",
                "app-staging",
                "DEPLOYMENT_RETIRED",
                {"generation": 1, "state": "ACTIVE"},
                {"generation": 1, "state": "RETIRED"},
            ),
            (
                "instance-state",
                "Instance",
                "acme:app-staging-g1-0",
                "INSTANCE_TRANSITIONED",
                {"state": "ACTIVE"},
                {"state": "DRAINING"},
            ),
            (
                "instance-state",
                "Instance",
                "acme:app-staging-g1-0",
                "INSTANCE_TRANSITIONED",
                {"state": "DRAINING"},
                {"state": "RETIRED"},
            ),
        ],
        [],
        health={"acme:app-staging-g2-0": "HEALTHY"},
    ),
    "a canary whose instance is unhealthy halts where it is": Row(
        fleet(
            base_staging=STAGING.removeprefix("---\n"),
            app__v1=V1,
            app__v2=version("2.0.0", "DRAFT", parent="1.0.0", prompt="prompts/v2.md"),
            deploy=canary("2.0.0", replicas=2),
        ),
        lambda s: _with_deployment(
            s,
            [
                record(1, "app-staging", "app@1.0.0", 2, environment="staging"),
                record(
                    2,
                    "app-staging",
                    "app@2.0.0",
                    2,
                    generation=2,
                    environment="staging",
                    previous="app@1.0.0",
                    strategy=STAGING_CANARY,
                    rollout="PROGRESSING",
                    canary_step=1,
                ),
            ],
            [
                *instances(record(1, "app-staging", "app@1.0.0", 2, environment="staging"), "ACTIVE"),
                *instances(record(2, "app-staging", "app@2.0.0", 2, generation=2, environment="staging"), "ACTIVE"),
            ],
        ),
        [("record-rollout", "Deployment", "app-staging", "DEPLOYMENT_CANARY_HALTED")],
        [
            (
                "Deployment",
                "app-staging",
                "Halted",
                "CanaryUnhealthy",
                "canary app@2.0.0 halted at 50% (step 2 of 3): acme:app-staging-g2-0 is UNHEALTHY; it goes on once they are healthy again",
            )
        ],
        health={"acme:app-staging-g2-0": "UNHEALTHY"},
    ),
}


def _without(kind: str, name: str) -> actual_.Actual:
    """An Actual to merge with ``|``: drops one object (the planner then creates it)."""
    return _Drop(kind, name)  # type: ignore[return-value]


class _Drop:
    def __init__(self, kind: str, name: str) -> None:
        self.key = (kind, "acme", name)

    def __ror__(self, actual: actual_.Actual) -> actual_.Actual:
        actual.objects.pop(self.key, None)
        return actual


def _engine(snap: snapshot_.Snapshot) -> engines.EmbeddedEngine:
    engine = engines.EmbeddedEngine()
    engine.load(engines.Bundle(library.modules_for(snap.rego, tests=False), {}, snap.commit.sha))
    return engine


def _shown(action: actions.Action, width: int) -> tuple[Any, ...]:
    head = (action.op, action.kind, action.name, action.record)
    return (*head, action.before, action.after) if width > 4 else head


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_the_plan_of_a_commit_against_a_state(row: Row) -> None:
    snap = memory.snapshot_of(row.files)
    actual = row.actual(snap) if row.actual is not None else actual_.Actual()
    result = planning.plan(snap, actual, _engine(snap), health=row.health)
    assert not result.problems
    expected = row.actions if row.actual is not None else None
    if expected is None:  # a new fleet: the objects in order, then the version's own steps
        got = [_shown(a, 4) for a in result.actions if a.op == "create"]
        assert got == row.actions
    else:
        got = [_shown(a, len(e)) for a, e in zip(result.actions, expected, strict=False)]
        assert got == expected and len(result.actions) == len(expected), [_shown(a, 6) for a in result.actions]
    conditions = [(c.kind, c.name, c.type, c.reason, c.message) for c in result.conditions]
    assert conditions == row.conditions


def test_a_changed_genome_is_refused_naming_the_file_and_the_version() -> None:
    snap = memory.snapshot_of(fleet(app__v1=V1))
    actual = applied(snap)
    key = ("AgentVersion", "acme", "app@1.0.0")
    actual.objects[key] = actual.objects[key]._replace(genome_hash="sha256:" + "7" * 64)
    result = planning.plan(snap, actual, _engine(snap))
    [problem] = result.problems
    assert (problem.file, problem.field) == ("fleet/app/v1.yaml", "spec.genome")
    assert "the genome of app@1.0.0 is write-once" in problem.message
