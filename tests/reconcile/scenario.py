"""A small fleet and helpers for reconcile tests: real Git commits applied to a real database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.desired import repository
from reconciler.reconcile import running
from reconciler.state import database, tables
from tests.conftest import GitRepo

AUTHOR = "Alice Smith <alice@acme.example>"

BASE = """\
apiVersion: arm/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: arm/v1
kind: Project
metadata: {name: apps}
---
apiVersion: arm/v1
kind: Role
metadata: {name: release-manager}
spec:
  permissions: ["approvals:decide", "instances:pause", "instances:resume", "instances:quarantine", "instances:read-only",
                "evaluations:submit"]
---
apiVersion: arm/v1
kind: Role
metadata: {name: viewer}
spec:
  permissions: ["audit:read"]
---
apiVersion: arm/v1
kind: Operator
metadata: {name: alice}
spec: {email: alice@acme.example, roles: [release-manager]}
---
apiVersion: arm/v1
kind: Operator
metadata: {name: victor}
spec: {email: victor@acme.example, roles: [viewer]}
---
apiVersion: arm/v1
kind: Environment
metadata: {name: dev}
spec:
  admission: {minLifecycle: DRAFT}
  activation: immediate
---
apiVersion: arm/v1
kind: Environment
metadata: {name: prod}
spec:
  production: true
  admission: {minLifecycle: APPROVED}
---
apiVersion: arm/v1
kind: ToolCatalog
metadata: {name: tools}
spec:
  tools: [{name: crm.lookup, risk: GREEN}]
"""

TEMPLATE = """\
apiVersion: arm/v1
kind: AgentTemplate
metadata: {name: app}
spec: {project: apps, role: helps, owner: team@acme.example}
---
apiVersion: arm/v1
kind: EvaluationSuite
metadata: {name: qa}
spec:
  category: capability
  metrics: [{name: pass_rate, threshold: 0.9}]
  minSamples: 10
  appliesTo: {templates: [app]}
"""

#: What ``pass`` records: a run of suite qa that clears it.
PASSING = {"pass_rate": 0.95}


def version(number: str, lifecycle: str, parent: str | None = None, prompt: str = "prompts/v1.md") -> str:
    parent_line = f"  parent: app@{parent}\n" if parent else ""
    return f"""\
apiVersion: arm/v1
kind: AgentVersion
metadata: {{name: app@{number}}}
spec:
  template: app
{parent_line}  lifecycle: {lifecycle}
  genome:
    model: {{provider: openai, name: gpt-4o, parameters: {{temperature: 0.2}}}}
    prompts: [{{file: {prompt}}}]
    tools: [{{name: crm.lookup}}]
"""


def deployment(name: str, environment: str, number: str, replicas: int) -> str:
    return f"""\
apiVersion: arm/v1
kind: Deployment
metadata: {{name: {name}}}
spec: {{template: app, environment: {environment}, version: app@{number}, replicas: {replicas}}}
"""


def first_commit_files() -> dict[str, str | bytes | None]:
    return {
        "fleet/base.yaml": BASE,
        "fleet/app/template.yaml": TEMPLATE,
        "fleet/app/v1.yaml": version("1.0.0", "TESTING"),
        "fleet/app/prompts/v1.md": "You help.\n",
        "fleet/deploy-dev.yaml": deployment("app-dev", "dev", "1.0.0", 2),
    }


def make_reconciler(url: str, repo: GitRepo | Path) -> running.Reconciler:
    engine = database.connect(url)
    database.migrate(engine)
    path = repo.path if isinstance(repo, GitRepo) else repo
    return running.Reconciler(engine, repository.Repository(path), "fleet")


def evaluate(engine: sa.Engine, *versions: str, metrics: dict[str, float] | None = None, samples: int = 100) -> list[int]:
    """Record a run of suite qa for each version (``app@1.0.0``; passing unless ``metrics`` say
    otherwise), submitted by operator alice as ``armctl eval submit`` does: the evidence the
    ``TESTING -> CANDIDATE`` gate reads. Returns the run ids."""
    import datetime as dt

    from reconciler.evidence import recording

    ids = []
    with engine.begin() as connection:
        for name in versions:
            recorded = recording.submit(
                connection, "acme", recording.Submitter("operator", "alice"), version=name, suite="qa",
                metrics=metrics or PASSING, samples=samples, now=dt.datetime.now(dt.UTC),
            )  # fmt: skip
            ids.append(recorded.run["id"])
    return ids


def records(engine: sa.Engine, after_id: int = 0) -> list[tuple[str, str, str]]:
    c = tables.change_records.c
    with engine.connect() as connection:
        rows = connection.execute(sa.select(c.type, c.object_kind, c.object_name).where(c.id > after_id).order_by(c.id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


def last_record_id(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.coalesce(sa.func.max(tables.change_records.c.id), 0))).scalar_one())


def rows(engine: sa.Engine, table: sa.Table, *columns: str, **where: Any) -> list[tuple[Any, ...]]:
    cols = [table.c[name] for name in columns]
    query = sa.select(*cols)
    for key, value in where.items():
        query = query.where(table.c[key] == value)
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(query.order_by(*cols))]


def assert_cached_state_is_true(rec: running.Reconciler) -> None:
    """The state a reconciler keeps after an apply equals what the database now holds."""
    from reconciler.state import actual as actual_

    cached = rec.cached_actual
    assert cached is not None
    with rec.db.connect() as connection:
        fresh = actual_.load(connection)

    def objects(a: actual_.Actual) -> dict[Any, Any]:
        return {k: r._replace(id=0) for k, r in a.objects.items()}

    assert objects(cached) == objects(fresh)
    assert cached.deployments == fresh.deployments
    assert cached.instances == fresh.instances
    assert cached.instance_counts == fresh.instance_counts
    assert cached.approvals == fresh.approvals
    assert cached.chain_heads == fresh.chain_heads
    assert cached.conditions == fresh.conditions
    assert cached.evaluations == fresh.evaluations
    assert (cached.applied_sha, cached.policy_digest) == (fresh.applied_sha, fresh.policy_digest)
