"""Recording evaluation runs: evidence bound to a version's genome hash, append-only, chained.

``submit`` is what ``POST /v1/evaluations`` and ``armctl eval submit`` run, in the caller's
transaction. It authorises the submitter (a ``ci`` token of the tenant, within its templates, or
an operator whose roles grant ``evaluations:submit``), binds the run to the version's genome hash
as stored (a run that names another hash is refused: it measured something else), checks the
metrics against the suite as the applied commit declares it, strips secrets from what it keeps,
and writes the run with an ``EVALUATION_RECORDED`` change record naming the submitter. Runs are
never updated or deleted (the store refuses it too).

Continuous evaluation: when the run makes a safety or regression suite fail for a version that is
deployed, ``EVALUATION_FAILED`` is recorded and the suite's ``onFailure`` holds the version's
instances through ``oversight.holds.restrict`` (read-only or paused, the run as the reason). The
gates then keep new deployments of the version waiting until a passing run is recorded; the hold
itself stays until an operator resumes the instances.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
import pydantic
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain
from reconciler.desired import documents, models
from reconciler.evidence import judging
from reconciler.oversight import access, holds
from reconciler.policy import risk
from reconciler.state import actual as actual_
from reconciler.state import fleetstate, tables

__all__ = [
    "MAX_DETAILS_BYTES",
    "Recorded",
    "Submitter",
    "applied_suites",
    "check_hash",
    "import_runs",
    "list_runs",
    "run_json",
    "runs_of",
    "submit",
    "template_labels",
]

#: The largest ``details`` a run may carry, as JSON.
MAX_DETAILS_BYTES = 64 * 1024
#: The most samples a run may report (the column is a 32-bit integer).
MAX_SAMPLES = 1_000_000_000
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_URL = re.compile(r"^https?://[^\s]+$")


@dataclasses.dataclass(frozen=True)
class Submitter:
    """Who submits a run: a ci token (``name`` is the token's) or an operator."""

    kind: str  # ci | operator
    name: str
    templates: frozenset[str] | None = None  # a ci token's templates; None: all of the tenant's

    @classmethod
    def of(cls, principal: access.Principal) -> Submitter:
        """The submitter an API token stands for; ``errors.Forbidden`` for a runtime token."""
        if principal.kind == "ci":
            return cls("ci", principal.name, principal.templates)
        if principal.kind == "operator" and principal.operator is not None:
            return cls("operator", principal.operator)
        raise errors.Forbidden(
            f"token {principal.name!r} is {access.article(principal.kind)} {principal.kind} token; submitting evaluation "
            "runs needs a ci token or the token of an operator holding evaluations:submit"
        )

    def __str__(self) -> str:
        return f"operator {self.name}" if self.kind == "operator" else f"ci token {self.name}"


@dataclasses.dataclass(frozen=True)
class Recorded:
    run: dict[str, Any]  # as ``run_json`` shows it
    verdict: judging.Verdict  # what the version's runs of the suite amount to now
    restricted: list[holds.Controlled]  # instances continuous evaluation held
    left: list[holds.Controlled]  # instances it could not (already held, not reachable)
    deployed: bool


def submit(
    connection: sa.Connection,
    tenant: str,
    submitter: Submitter,
    *,
    version: str,
    suite: str,
    metrics: Mapping[str, Any],
    samples: Any,
    now: dt.datetime,
    run_url: str | None = None,
    details: Any = None,
    genome_hash: str | None = None,
) -> Recorded:
    """Record one run (see the module docstring); raises the project's errors, writing nothing."""
    check_hash(genome_hash)
    if submitter.kind == "operator" and not access.allows(
        access.operator_permissions(connection, tenant, submitter.name), "evaluations:submit"
    ):
        raise errors.Forbidden(f"operator {submitter.name!r} lacks permission evaluations:submit in tenant {tenant!r}")
    v = tables.agent_versions.c
    row = connection.execute(
        sa.select(v.name, v.template, v.parent, v.genome_hash, v.integrity, v.status).where(v.tenant == tenant, v.name == version)
    ).first()
    if row is None or row.status != "ACTIVE":
        raise errors.NotFound(f"version {version!r} is not declared in the applied fleet of tenant {tenant!r}")
    if submitter.templates is not None and row.template not in submitter.templates:
        allowed = ", ".join(sorted(submitter.templates))
        raise errors.Forbidden(f"token {submitter.name!r} submits runs for template {allowed} only, not {row.template!r}")
    if genome_hash is not None and genome_hash != row.genome_hash:
        raise errors.Conflict(
            f"the run names genome {genome_hash}, but {version} is {row.genome_hash}: a run is evidence only for the "
            "genome it measured"
        )
    if row.integrity != "OK":
        raise errors.Conflict(f"version {version} failed its integrity check; no evidence can be recorded for it")
    suites = applied_suites(connection, tenant, [suite])
    found = suites.get(suite)
    if found is None:
        raise errors.NotFound(f"EvaluationSuite {suite!r} is not declared in the applied fleet of tenant {tenant!r}")
    facts, digest = found
    labels = template_labels(connection, tenant, row.template)
    if not judging.applies(facts, row.template, labels):
        raise errors.ConfigError(f"EvaluationSuite {suite!r} does not apply to template {row.template!r} (see its appliesTo)")
    values = _metrics(facts, metrics, suite)
    count = _samples(samples)
    url = _run_url(run_url)
    kept = _details(details)

    runs = _runs(connection, tenant, version, suite)
    # Judged before the row is written (runs are never updated): the new run stands last, under
    # a provisional id, then is judged again under its own for the summaries that name it.
    status = _judge(
        connection, tenant, suite, facts, row, [*runs, actual_.RunRow(0, suite, row.genome_hash, values, count)]
    ).status
    r = tables.evaluation_runs
    run_id = int(
        connection.execute(
            r.insert().returning(r.c.id),
            {
                "tenant": tenant,
                "version": version,
                "template": row.template,
                "genome_hash": row.genome_hash,
                "suite": suite,
                "category": facts["category"],
                "suite_digest": digest,
                "metrics": values,
                "samples": count,
                "run_url": url,
                "details": kept,
                "submitter": str(submitter),
                "verdict": status,
                "at": now,
            },
        ).scalar_one()
    )
    verdict = _judge(
        connection, tenant, suite, facts, row, [*runs, actual_.RunRow(run_id, suite, row.genome_hash, values, count)]
    )
    operator = submitter.name if submitter.kind == "operator" else None
    author = "" if operator else str(submitter)
    stored = _fetch(connection, run_id)
    records = [
        chain.Record(
            tenant=tenant,
            type="EVALUATION_RECORDED",
            object_kind="AgentVersion",
            object_name=version,
            before=None,
            after={
                "run": run_id,
                "suite": suite,
                "category": facts["category"],
                "genomeHash": row.genome_hash,
                "metrics": values,
                "samples": count,
                "runUrl": url,
                "submitter": str(submitter),
                "status": verdict.status,
                "summary": verdict.summary,
            },
            operator=operator,
            author=author,
        )
    ]
    deployed = _deployed(connection, tenant, version)
    fails = verdict.status == "failing" and verdict.run == run_id and facts["category"] in ("safety", "regression")
    restricted: list[holds.Controlled] = []
    left: list[holds.Controlled] = []
    if fails and deployed:
        records.append(
            chain.Record(
                tenant=tenant,
                type="EVALUATION_FAILED",
                object_kind="AgentVersion",
                object_name=version,
                before=None,
                after={"run": run_id, "suite": suite, "category": facts["category"], "summary": verdict.summary,
                       "onFailure": facts["onFailure"]},
                operator=operator,
                author=author,
            )
        )  # fmt: skip
    chain.append(connection, records, now)
    if fails and deployed and facts["onFailure"] in holds.RESTRICTIONS:
        reason = f"evaluation run {run_id}: {verdict.summary}"
        restricted, left = holds.restrict(
            connection, tenant, version, facts["onFailure"], f"evaluation-run-{run_id}", reason, now,
            operator=operator, author=author, run=run_id,
        )  # fmt: skip
    fleetstate.bump_generation(connection)  # a gate's evidence changed outside Git
    return Recorded(run_json(stored), verdict, restricted, left, deployed)


# ---------------------------------------------------------------- reading


def applied_suites(
    connection: sa.Connection, tenant: str, names: list[str] | None = None
) -> dict[str, tuple[dict[str, Any], str]]:
    """The applied fleet's EvaluationSuites of ``tenant`` (all, or ``names``): name → (facts, digest)."""
    s = tables.evaluation_suites.c
    query = sa.select(s.name, s.spec, s.digest).where(s.tenant == tenant, s.status == "ACTIVE")
    if names is not None:
        query = query.where(s.name.in_(names))
    found = {}
    for row in connection.execute(query.order_by(s.name)):
        try:
            spec = models.EvaluationSuiteSpec.model_validate(row.spec)
        except pydantic.ValidationError as exc:  # written by an apply that validated it: a bug or a hand edit
            raise errors.InternalError(f"the stored EvaluationSuite {row.name!r} no longer validates: {exc}") from exc
        found[row.name] = (documents.suite_facts(spec), row.digest)
    return found


def list_runs(
    connection: sa.Connection,
    *,
    tenant: str | None = None,
    version: str | None = None,
    suite: str | None = None,
    templates: frozenset[str] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Recorded runs, oldest first (the newest ``limit`` of them)."""
    r = tables.evaluation_runs.c
    query = sa.select(tables.evaluation_runs)
    if tenant:
        query = query.where(r.tenant == tenant)
    if version:
        query = query.where(r.version == version)
    if suite:
        query = query.where(r.suite == suite)
    if templates is not None:
        query = query.where(r.template.in_(sorted(templates)))
    rows = [run_json(row) for row in connection.execute(query.order_by(r.id.desc()).limit(limit)).mappings()]
    rows.reverse()
    return rows


def run_json(row: Any) -> dict[str, Any]:
    """A stored run as the API and ``armctl eval list --format json`` show it."""
    return {
        "id": row["id"],
        "tenant": row["tenant"],
        "version": row["version"],
        "template": row["template"],
        "genomeHash": row["genome_hash"],
        "suite": row["suite"],
        "category": row["category"],
        "metrics": row["metrics"],
        "samples": row["samples"],
        "runUrl": row["run_url"],
        "details": row["details"],
        "submitter": row["submitter"],
        "verdict": row["verdict"],
        "at": row["at"].isoformat(),
    }


def runs_of(connection: sa.Connection, tenant: str, versions: list[str]) -> dict[str, list[actual_.RunRow]]:
    """version → its runs (every suite), oldest first, as the gates read them."""
    r = tables.evaluation_runs.c
    found: dict[str, list[actual_.RunRow]] = {v: [] for v in versions}
    query = sa.select(r.id, r.version, r.suite, r.genome_hash, r.metrics, r.samples).where(
        r.tenant == tenant, r.version.in_(versions)
    )
    for run in connection.execute(query.order_by(r.id)):
        found[run.version].append(actual_.RunRow(run.id, run.suite, run.genome_hash, run.metrics, run.samples))
    return found


class _Exported(pydantic.BaseModel):
    """A run as ``run_json`` shows it: what ``import_runs`` reads back."""

    model_config = pydantic.ConfigDict(extra="ignore")
    id: int = pydantic.Field(ge=1)
    tenant: str = pydantic.Field(min_length=1, max_length=253)
    version: str = pydantic.Field(min_length=1, max_length=253)
    template: str = pydantic.Field(min_length=1, max_length=253)
    genomeHash: str = pydantic.Field(pattern=r"^sha256:[0-9a-f]{64}$")
    suite: str = pydantic.Field(min_length=1, max_length=253)
    category: Literal["safety", "regression", "capability"]
    metrics: dict[str, Annotated[float, pydantic.Field(allow_inf_nan=False)]]
    samples: int = pydantic.Field(ge=0, le=MAX_SAMPLES)
    runUrl: str | None = pydantic.Field(default=None, max_length=2048)
    submitter: str = pydantic.Field(max_length=300)
    verdict: Literal["missing", "passing", "failing"]
    at: dt.datetime


def import_runs(connection: sa.Connection, runs: Any, source: str) -> int:
    """Write runs exported from another store (``GET /v1/evaluations``, ``armctl eval list
    --format json``) as they are, ids kept: how a pull-request plan's scratch database gets the
    evidence production holds. Gates still judge them against the commit's suites and bind them
    by genome hash. ``errors.ConfigError`` names the run and field of anything malformed."""
    if not isinstance(runs, list):
        raise errors.ConfigError(f"{source}: a JSON list of evaluation runs is needed (as GET /v1/evaluations answers)")
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(runs):
        try:
            run = _Exported.model_validate(item)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in first["loc"]) or "run"
            raise errors.ConfigError(f"{source}: run {index}, field {field}: {first['msg']}") from exc
        if run.at.tzinfo is None:
            raise errors.ConfigError(f"{source}: run {index}, field at: a time with its UTC offset is needed")
        rows.append(
            {
                "id": run.id, "tenant": run.tenant, "version": run.version, "template": run.template,
                "genome_hash": run.genomeHash, "suite": run.suite, "category": run.category, "suite_digest": "imported",
                "metrics": run.metrics, "samples": run.samples, "run_url": run.runUrl, "details": None,
                "submitter": run.submitter, "verdict": run.verdict, "at": run.at,
            }
        )  # fmt: skip
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise errors.ConfigError(f"{source}: run ids repeat; export the runs again")
    if rows:
        connection.execute(tables.evaluation_runs.insert(), sorted(rows, key=lambda r: r["id"]))
    return len(rows)


# ---------------------------------------------------------------- checks


def _metrics(facts: Mapping[str, Any], given: Mapping[str, Any], suite: str) -> dict[str, float]:
    if not isinstance(given, Mapping) or not given:
        raise errors.ConfigError(f"metrics: report every metric of suite {suite!r} as name: value")
    declared = {m["name"]: m for m in facts["metrics"]}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise errors.ConfigError(
            f"metrics: suite {suite!r} declares no metric {', '.join(map(repr, unknown))} (it declares {', '.join(declared)})"
        )
    absent = [name for name in declared if name not in given]
    if absent:
        raise errors.ConfigError(f"metrics: suite {suite!r} needs every metric it declares; missing {', '.join(absent)}")
    values: dict[str, float] = {}
    for name, metric in declared.items():
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise errors.ConfigError(f"metrics.{name}: a finite number is needed, not {value!r}")
        if metric["unit"] == "rate" and not 0 <= value <= 1:
            raise errors.ConfigError(f"metrics.{name}: a rate lies between 0 and 1 (97% is 0.97), not {value!r}")
        values[name] = float(value)
    return values


def _samples(samples: Any) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= MAX_SAMPLES:
        raise errors.ConfigError(f"samples: a whole number between 0 and {MAX_SAMPLES} is needed, not {samples!r}")
    return samples


def _run_url(url: str | None) -> str | None:
    if url is None or url == "":
        return None
    if not isinstance(url, str) or len(url) > 2048 or not _URL.match(url):
        raise errors.ConfigError("runUrl: an http(s) URL of at most 2048 characters is needed")
    return risk.redact_text(url)  # credentials in a URL are not kept


def _details(details: Any) -> Any:
    if details is None:
        return None
    if not isinstance(details, dict):
        raise errors.ConfigError("details: a JSON object is needed")
    try:
        size = len(orjson.dumps(details))
    except TypeError as exc:
        raise errors.ConfigError(f"details: not JSON: {exc}") from exc
    if size > MAX_DETAILS_BYTES:
        raise errors.ConfigError(f"details: {size} bytes as JSON, above the limit of {MAX_DETAILS_BYTES}")
    return risk.clean(risk.redact(details))


def check_hash(genome_hash: str | None) -> str | None:
    if genome_hash is not None and not _HASH.match(genome_hash):
        raise errors.ConfigError("genomeHash: 'sha256:' and 64 lowercase hex digits are needed")
    return genome_hash


# ---------------------------------------------------------------- internals


def template_labels(connection: sa.Connection, tenant: str, template: str) -> dict[str, str]:
    """The labels of an applied template, which suites select templates by."""
    a = tables.agent_templates.c
    labels = connection.execute(sa.select(a.labels).where(a.tenant == tenant, a.name == template)).scalar()
    return dict(labels or {})


def _runs(connection: sa.Connection, tenant: str, version: str, suite: str) -> list[actual_.RunRow]:
    r = tables.evaluation_runs.c
    query = sa.select(r.id, r.suite, r.genome_hash, r.metrics, r.samples).where(
        r.tenant == tenant, r.version == version, r.suite == suite
    )
    return [actual_.RunRow(x.id, x.suite, x.genome_hash, x.metrics, x.samples) for x in connection.execute(query.order_by(r.id))]


def _judge(
    connection: sa.Connection, tenant: str, suite: str, facts: dict[str, Any], row: Any, runs: list[actual_.RunRow]
) -> judging.Verdict:
    if facts["category"] != "regression" or row.parent is None:
        return judging.judge(suite, facts, row.genome_hash, runs)
    v = tables.agent_versions.c
    parent_hash = connection.execute(sa.select(v.genome_hash).where(v.tenant == tenant, v.name == row.parent)).scalar()
    return judging.judge(
        suite,
        facts,
        row.genome_hash,
        runs,
        parent=row.parent,
        parent_hash=parent_hash,
        parent_runs=_runs(connection, tenant, row.parent, suite) if parent_hash else (),
    )


def _fetch(connection: sa.Connection, run_id: int) -> Any:
    r = tables.evaluation_runs
    return connection.execute(sa.select(r).where(r.c.id == run_id)).mappings().one()


def _deployed(connection: sa.Connection, tenant: str, version: str) -> bool:
    """Whether ``version`` runs anywhere: a live deployment record, or a live instance."""
    d, i = tables.deployments.c, tables.instances.c
    record = sa.select(d.id).where(d.tenant == tenant, d.version == version, d.state != "RETIRED").limit(1)
    instance = sa.select(i.id).where(i.tenant == tenant, i.version == version, i.state != "RETIRED").limit(1)
    return connection.execute(record).first() is not None or connection.execute(instance).first() is not None
