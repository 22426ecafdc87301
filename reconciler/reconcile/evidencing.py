"""The gates' evidence: what a step's EvaluationSuites say of the version's recorded runs. Pure.

For each lifecycle step and deployment the planner asks the gates about, this module lists the
suites that matter, each judged by ``evidence.judging`` over the runs the actual state holds
(``state.actual.Actual.evaluations``) against the suites as the commit declares them:

- a version's step (``TESTING->CANDIDATE``, ``CANDIDATE->APPROVED``): the suites that apply to
  its template and are required for that step (``required: true``);
- a deployment: the suites required for admission to its environment (``required: true``), and
  every other safety or regression suite of the template whose latest run fails (continuous
  evaluation: a version that failed one is not deployed anew until a passing run is recorded).

The gate library (``policies/arm/gates.rego``) decides what the list means: a required suite
that is not passing, or any failing one, holds the step; a ``TESTING -> CANDIDATE`` step that
no suite requires holds too (no evidence, no promotion).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from reconciler.desired import snapshot as snapshot_
from reconciler.evidence import judging
from reconciler.reconcile import context

__all__ = ["for_deployment", "for_version_step"]

#: Categories whose failing run holds a version's new deployments even where not required.
CONTINUOUS = ("safety", "regression")


def _suites(ctx: context.Context, tenant: str, template: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, facts) of the suites that apply to ``template``, by name (memoised per plan)."""
    memo: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = ctx.memo.setdefault("suites", {})
    found = memo.get((tenant, template))
    if found is None:
        by_tenant: dict[str, list[snapshot_.Object]] | None = ctx.memo.get("suites_by_tenant")
        if by_tenant is None:
            by_tenant = defaultdict(list)
            for suite in ctx.desired.of_kind("EvaluationSuite"):
                by_tenant[suite.tenant].append(suite)
            ctx.memo["suites_by_tenant"] = by_tenant
        template_obj = ctx.desired.get("AgentTemplate", tenant, template)
        labels = template_obj.doc.facts["labels"] if template_obj is not None and template_obj.doc.facts else {}
        # Only suites naming the template, or selecting one of its labels, can apply: a fleet of
        # thousands of templates must not try every suite on each.
        named, selecting = _index(ctx, tenant, by_tenant.get(tenant, []))
        candidates = {s.key: s for s in named.get(template, [])}
        for pair in labels.items():
            candidates.update((s.key, s) for s in selecting.get(pair, []))
        found = [(s.name, s.doc.facts) for s in sorted(candidates.values()) if judging.applies(s.doc.facts, template, labels)]
        memo[(tenant, template)] = found
    return found


def _index(
    ctx: context.Context, tenant: str, suites: list[snapshot_.Object]
) -> tuple[dict[str, list[snapshot_.Object]], dict[tuple[str, str], list[snapshot_.Object]]]:
    """A tenant's suites by the template they name, and by one of the labels they select."""
    memo = ctx.memo.setdefault("suite_index", {})
    index = memo.get(tenant)
    if index is None:
        named: dict[str, list[snapshot_.Object]] = defaultdict(list)
        selecting: dict[tuple[str, str], list[snapshot_.Object]] = defaultdict(list)
        for suite in suites:
            scope = suite.doc.facts["appliesTo"]
            for name in scope["templates"] or ():
                named[name].append(suite)
            if scope["labels"]:
                selecting[min(scope["labels"].items())].append(suite)
        index = memo[tenant] = (named, selecting)
    return index  # type: ignore[no-any-return]


def _verdict(ctx: context.Context, tenant: str, version: str, suite: str, facts: dict[str, Any]) -> judging.Verdict:
    """The verdict of a version's runs of a suite, judged once per plan (a version's step and its
    deployments ask alike)."""
    verdicts: dict[tuple[str, str, str], judging.Verdict] = ctx.memo.setdefault("verdicts", {})
    found = verdicts.get((tenant, version, suite))
    if found is not None:
        return found
    desired = ctx.desired
    genome_hash = desired.genome_hashes.get((tenant, version), "")
    obj = desired.get("AgentVersion", tenant, version)
    parent = obj.doc.parent if obj is not None else None
    runs = _runs_of(ctx, tenant, version, suite)
    if facts["category"] != "regression" or parent is None:
        verdict = judging.judge(suite, facts, genome_hash, runs, detail=False)
    else:
        verdict = judging.judge(
            suite,
            facts,
            genome_hash,
            runs,
            parent=parent,
            parent_hash=desired.genome_hashes.get((tenant, parent)),
            parent_runs=_runs_of(ctx, tenant, parent, suite),
            detail=False,
        )
    verdicts[(tenant, version, suite)] = verdict
    return verdict


def _runs_of(ctx: context.Context, tenant: str, version: str, suite: str) -> list[Any]:
    """A version's runs of one suite, oldest first."""
    return ctx.actual.evaluations.get((tenant, version, suite), [])


def _entry(verdict: judging.Verdict, required: bool) -> dict[str, Any]:
    entry = {"suite": verdict.suite, "category": verdict.category, "required": required, "status": verdict.status}
    if verdict.status != "passing":  # what a waiting step says; a whole fleet's passing ones would only weigh on the engine
        entry["summary"] = verdict.summary
    return entry


def for_version_step(ctx: context.Context, obj: snapshot_.Object, state: str, target: str) -> list[dict[str, Any]]:
    """The evidence of the suites required for a version's ``state -> target`` step."""
    step = f"{state}->{target}"
    return [
        _entry(_verdict(ctx, obj.tenant, obj.name, name, facts), True)
        for name, facts in _suites(ctx, obj.tenant, obj.doc.template or "")
        if judging.required_for(facts, step=step)
    ]


def for_deployment(ctx: context.Context, tenant: str, template: str, version: str, environment: str) -> list[dict[str, Any]]:
    """The evidence a deployment of ``version`` to ``environment`` is judged by (see the module
    docstring): required suites, and failing safety or regression suites."""
    evidence = []
    for name, facts in _suites(ctx, tenant, template):
        required = judging.required_for(facts, environment=environment)
        if not required and facts["category"] not in CONTINUOUS:
            continue
        verdict = _verdict(ctx, tenant, version, name, facts)
        if required or verdict.status == "failing":
            evidence.append(_entry(verdict, required))
    return evidence
