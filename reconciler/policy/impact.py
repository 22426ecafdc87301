"""Decision impact: what a policy change does to tool-call decisions, before it is applied.

A :class:`Side` is everything that decides tool calls at one commit (or in the database): the
fleet's Rego next to the library, each version's effective envelope, each tenant's tool catalog,
which environments are production and where versions run. :func:`decide` asks one side for one
call through the decision endpoint's own path (``inputs.build_input`` and ``inputs.evaluate``,
what ``decisions.deciding`` calls), so an impact or a replay answers exactly as the endpoint would.

Two uses, one machinery:

- :func:`probe` (``armctl plan``): for every version deployed or deployable on both sides, every
  tool of either catalog and every risk level a call of it can reach (each argument finding
  raises one level), under the base and under the head; identical inputs are evaluated once,
  and a probe whose inputs are the same on both sides is not evaluated at all.
- ``policy.replays.Replayer`` (``armctl replay``): a recorded decision decided again under the
  head side, from what the decision kept (``decisions.deciding._replay_data``).

:class:`Flips` groups the decisions that change by from → to, tool and scope, with counts and an
example; a flip **widens** when it allows what was not allowed, or asks for approval where it denied.
Pure: the sides are built by ``reconcile.impacting`` (from a snapshot or the database).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import multiprocessing
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent import futures
from typing import Any

import orjson

from reconciler.policy import engines, envelopes, inputs, library, risk

__all__ = ["Flips", "Impact", "Side", "decide", "probe", "widening"]

#: Lifecycles a version may be deployed at (an environment admits from one of them upward).
DEPLOYABLE = frozenset(("CANDIDATE", "APPROVED"))

#: The findings that raise a probe's risk by 0, 1 and 2 levels (what arguments can show).
_RAISES: tuple[tuple[str | None, str | None, str | None, str | None], ...] = (
    (None, None, None, None),
    (None, None, "a destructive operation", None),
    (None, None, "a destructive operation", "a bulk operation"),
)

#: Fleet Rego that reads the caller (``input.instance``), or the data document (keyed by version):
#: then a decision may depend on which version asks, and probes are made per version.
_READS_CALLER = re.compile(r"\binput\s*(?:\.\s*instance\b|\[\s*\"instance\")|\bdata\b(?!\s*\.\s*arm\s*\.\s*(?:decision|ext)\b)")
_READS_ENV_NAME = re.compile(r"environment\b[^\n]*\bname\b")

_NOT_DEPLOYED = "(not deployed)"


def widening(before: str, after: str) -> bool:
    """Whether a flip lets through what was held: → ALLOW, or DENY → NEEDS_APPROVAL."""
    return (after == "ALLOW" and before != "ALLOW") or (before == "DENY" and after == "NEEDS_APPROVAL")


@dataclasses.dataclass
class Side:
    """What decides tool calls at one commit or in the database."""

    revision: str
    fleet_modules: Mapping[str, str]  # the fleet's Rego: path → text
    envelopes: Mapping[tuple[str, str], Mapping[str, Any]]  # (tenant, version) → effective envelope
    templates: Mapping[tuple[str, str], str]  # (tenant, version) → template
    lifecycles: Mapping[tuple[str, str], str]  # (tenant, version) → lifecycle (desired, or stored)
    tools: Mapping[str, Mapping[str, Mapping[str, Any]]]  # tenant → tool → catalog entry
    production: Mapping[tuple[str, str], bool]  # (tenant, environment) → production
    placements: Mapping[tuple[str, str], frozenset[str]]  # (tenant, version) → environments it runs in
    #: tenant → its ``spec.policyChanges.widening`` ({requiredApprovals, approverRoles}), where declared
    widening_rules: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    #: (tenant, template) → its project: flips are grouped by project (a template's own name where unknown)
    projects: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    _engine: engines.EmbeddedEngine | None = dataclasses.field(default=None, repr=False)
    _for_policy: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)
    _keys: dict[int, bytes] = dataclasses.field(default_factory=dict, repr=False)

    @functools.cached_property
    def modules(self) -> dict[str, str]:
        return library.modules_for({p: t for p, t in self.fleet_modules.items() if not p.endswith("_test.rego")}, tests=False)

    @property
    def reads_caller(self) -> bool:
        return any(_READS_CALLER.search(t) for p, t in self.fleet_modules.items() if not p.endswith("_test.rego"))

    @property
    def reads_environment_name(self) -> bool:
        return any(_READS_ENV_NAME.search(t) for p, t in self.fleet_modules.items() if not p.endswith("_test.rego"))

    def fleet_data(self) -> dict[str, Any]:
        """The policy's data as ``decisions.bundling.fleet_data`` builds it from the database."""
        by_tenant: dict[str, dict[str, Any]] = {}
        for (tenant, version), envelope in sorted(self.envelopes.items()):
            by_tenant.setdefault(tenant, {})[version] = envelopes.for_policy(envelope)
        tools = {tenant: dict(entries) for tenant, entries in self.tools.items()}
        return {"arm": {"fleet": {"envelopes": by_tenant, "tools": tools}}}

    def engine(self) -> engines.EmbeddedEngine:
        """An embedded engine loaded with this side's policy (built once)."""
        if self._engine is None:
            engine = engines.EmbeddedEngine()
            data = self.fleet_data() if self.reads_caller else {}
            engine.load(engines.Bundle(self.modules, data, self.revision))
            self._engine = engine
        return self._engine

    def policy_envelope(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """``envelope`` as the policy reads it, made once per envelope object."""
        made = self._for_policy.get(id(envelope))
        if made is None:
            made = self._for_policy[id(envelope)] = envelopes.for_policy(envelope)
        return made

    def envelope_key(self, envelope: Mapping[str, Any]) -> Any:
        """What tells envelopes apart for a decision: their content without the names of the
        envelopes that made them (no rule reads ``sources`` unless a fleet module names it), so
        templates whose envelopes say the same share their probes."""
        key = self._keys.get(id(envelope))
        if key is None:
            reads_sources = any("sources" in t for p, t in self.fleet_modules.items() if not p.endswith("_test.rego"))
            content = envelope if reads_sources else {k: v for k, v in envelope.items() if k != "sources"}
            key = self._keys[id(envelope)] = orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        return key

    def deployable(self) -> set[tuple[str, str]]:
        """Versions deployed, or at a lifecycle an environment may admit."""
        return {key for key, state in self.lifecycles.items() if state in DEPLOYABLE} | {
            key for key, places in self.placements.items() if places and key in self.envelopes
        }


def decide(
    side: Side,
    tenant: str,
    version: str,
    instance_id: str,
    state: str,
    environment: str | None,
    production: bool,
    tool: str,
    args: Mapping[str, Any],
    cost_estimate: float,
    findings: tuple[str | None, str | None, str | None, str | None],
    *,
    spent_run: int = 0,
    spent_day: int = 0,
    loop: int = 0,
    granted: bool = False,
    template: str | None = None,
) -> inputs.Outcome:
    """One call decided under ``side``, through the decision endpoint's path (the version must
    have an envelope on the side: the caller checks)."""
    envelope = side.envelopes[(tenant, version)]
    context = inputs.Context(
        {
            "id": instance_id,
            "state": state,
            "tenant": tenant,
            "template": template if template is not None else side.templates.get((tenant, version), ""),
            "version": version,
        },
        {"name": environment, "production": production},
        side.tools.get(tenant, {}).get(tool),
        envelope,
        spent_run,
        spent_day,
        loop,
        granted,
        side.policy_envelope(envelope),
    )
    document, assessment = inputs.build_input(context, tool, args, cost_estimate, findings)
    return inputs.evaluate(side.engine(), document, assessment)


# ---------------------------------------------------------------------------- flips


@dataclasses.dataclass
class _Group:
    tool: str
    before: str
    after: str
    scope: str
    count: int = 0
    versions: Counter[str] = dataclasses.field(default_factory=Counter)
    tenants: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: list[Any] = dataclasses.field(default_factory=list)


class Flips:
    """Decisions that change, grouped by (from, to, tool, scope), with counts and examples."""

    def __init__(self, examples: int = 1) -> None:
        self._groups: dict[tuple[str, str, str, str], _Group] = {}
        self._examples = examples

    def add(self, tool: str, before: str, after: str, scope: str, tenant: str, version: str, example: Any, n: int = 1) -> None:
        key = (before, after, tool, scope)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(tool, before, after, scope)
        group.count += n
        group.versions[version] += n
        group.tenants[tenant] += n
        if len(group.examples) < self._examples:
            group.examples.append(example)

    def __bool__(self) -> bool:
        return bool(self._groups)

    @property
    def total(self) -> int:
        return sum(g.count for g in self._groups.values())

    def widening_tenants(self) -> dict[str, list[dict[str, Any]]]:
        """tenant → the widening flips that touch it (for governed policy changes)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for flip in self.as_list():
            if flip["widening"]:
                for tenant in flip["tenants"]:
                    found.setdefault(tenant, []).append(flip)
        return found

    def as_list(self) -> list[dict[str, Any]]:
        """The flips, widening first, then by count; each ``{tool, from, to, widening, scope,
        count, versions, tenants, byVersion, byTenant, example(s)}``."""
        out: list[dict[str, Any]] = []
        for g in self._groups.values():
            out.append(
                {
                    "tool": g.tool,
                    "from": g.before,
                    "to": g.after,
                    "widening": widening(g.before, g.after),
                    "scope": g.scope,
                    "count": g.count,
                    "versions": sorted(g.versions),
                    "tenants": sorted(g.tenants),
                    "byVersion": dict(sorted(g.versions.items())),
                    "byTenant": dict(sorted(g.tenants.items())),
                    "example": g.examples[0] if g.examples else None,
                    "examples": list(g.examples),
                }
            )
        out.sort(key=lambda f: (not f["widening"], -int(f["count"]), f["tool"], f["from"], f["to"], f["scope"]))
        return out


# ---------------------------------------------------------------------------- probing


@dataclasses.dataclass
class Impact:
    """What :func:`probe` found: the flips, and how much it asked."""

    flips: Flips
    probes: int = 0
    evaluated: int = 0
    versions: int = 0
    #: tenants whose rules make this change wait: [{tenant, requiredApprovals, approverRoles}]
    governed: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        flips = self.flips.as_list()
        for flip in flips:
            for key in ("byVersion", "byTenant", "examples"):
                flip.pop(key)
        return {
            "waitsForApproval": self.governed,
            "changed": bool(flips),
            "flips": flips,
            "widening": sum(f["count"] for f in flips if f["widening"]),
            "narrowing": sum(f["count"] for f in flips if not f["widening"]),
            "versions": self.versions,
            "probes": self.probes,
            "evaluated": self.evaluated,
        }


class _Cached:
    """One side's decisions on probes, each distinct input evaluated once.

    Probing asks for decisions in steps: :meth:`key` names a probe's input (and queues it when it
    is new), :func:`_run` evaluates what both sides queued (on several cores when there is much),
    then :meth:`decision` reads the answer by key."""

    def __init__(self, side: Side, per_version: bool, by_env_name: bool) -> None:
        self.side = side
        self.per_version = per_version
        self.by_env_name = by_env_name
        self.cache: dict[tuple[Any, ...], str] = {}
        self.queued: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # key → what decide() is asked
        self.evaluated = 0

    def key(
        self,
        tenant: str,
        version: str,
        environment: str | None,
        production: bool,
        tool: str,
        raises: int,
        declared: tuple[bytes, dict[str, Any]] | None = None,
    ) -> tuple[Any, ...]:
        """The key of a probe: a call raised ``raises`` levels by its arguments, or with
        ``declared`` arguments (their canonical text, and them) assessed as a call's."""
        side = self.side
        envelope = side.envelopes[(tenant, version)]
        key = (
            tenant,
            version if self.per_version else None,
            side.envelope_key(envelope),
            environment if self.by_env_name else None,
            production,
            tool,
            raises if declared is None else declared[0],
        )
        if key not in self.cache and key not in self.queued:
            name = version if self.per_version else "probe"
            args = declared[1] if declared is not None else {}
            findings = risk.assess("GREEN", args).findings if declared is not None else _RAISES[raises]
            template = None if self.per_version else "probe"
            self.queued[key] = (tenant, version, f"{name}/probe", environment, production, tool, args, findings, template)
        return key

    def decision(self, key: tuple[Any, ...]) -> str:
        return self.cache[key]


def _run(sides: list[_Cached], workers: int) -> None:
    """Evaluate what each side has queued, in ``workers`` forked processes when there is much."""
    queued = [list(c.queued.items()) for c in sides]
    specs = [[spec for _, spec in q] for q in queued]
    if workers <= 1 or sum(map(len, specs)) < _PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        decided = [[_evaluate(c.side, spec) for spec in s] for c, s in zip(sides, specs, strict=True)]
    else:
        decided = _evaluate_forked([c.side for c in sides], specs, workers)
    for cached, q, decisions in zip(sides, queued, decided, strict=True):
        cached.queued = {}
        cached.evaluated += len(q)
        for (key, _), decision in zip(q, decisions, strict=True):
            cached.cache[key] = decision


#: Fewer queued probes than this are evaluated in the calling process (a pool costs ~30 ms).
_PARALLEL_FROM = 4000
_CHUNK = 500

#: What forked evaluators read: set just before the pool forks (copied into each child).
_forked: list[tuple[Side, list[tuple[Any, ...]]]] = []
_inherited: list[Any] = []


def _evaluate_forked(sides: list[Side], specs: list[list[tuple[Any, ...]]], workers: int) -> list[list[str]]:
    """Each side's decisions on its specs, evaluated by ``workers`` forked processes; should one
    die (the OOM killer, say) the rest is evaluated here rather than waited for."""
    _forked[:] = list(zip(sides, specs, strict=True))
    chunks = [(i, start) for i, s in enumerate(specs) for start in range(0, len(s), _CHUNK)]
    decided: list[list[str]] = [[] for _ in sides]
    done = 0
    gc.freeze()  # the children's collector leaves the parent's objects (and their pages) alone
    try:
        context = multiprocessing.get_context("fork")
        with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_forget_engines) as pool:
            for (i, _), decisions in zip(chunks, pool.map(_evaluate_chunk, chunks), strict=False):
                decided[i].extend(decisions)
                done += 1
    except futures.BrokenExecutor:
        for i, start in chunks[done:]:
            decided[i].extend(_evaluate(sides[i], spec) for spec in specs[i][start : start + _CHUNK])
    finally:
        gc.unfreeze()
        _forked.clear()
    return decided


def _forget_engines() -> None:
    # An engine belongs to the thread that made it: each child makes its own on first use. The
    # parent's copy is kept, not dropped, in the child (dropping it there is the engine's call).
    for side, _ in _forked:
        _inherited.append(side._engine)
        side._engine = None


def _evaluate_chunk(chunk: tuple[int, int]) -> list[str]:
    side, specs = _forked[chunk[0]]
    return [_evaluate(side, spec) for spec in specs[chunk[1] : chunk[1] + _CHUNK]]


def _evaluate(side: Side, spec: tuple[Any, ...]) -> str:
    tenant, version, instance_id, environment, production, tool, args, findings, template = spec
    outcome = decide(
        side, tenant, version, instance_id, "ACTIVE", environment, production, tool, args, 0.0, findings, template=template
    )
    return outcome.decision


def probe(base: Side, head: Side, versions: Iterable[tuple[str, str]] | None = None, *, workers: int = 1) -> Impact:
    """The decisions that differ between ``base`` and ``head`` over every version deployed or
    deployable on both sides (or ``versions``), every tool of either catalog and every risk level
    its calls can reach, in every environment the version runs in (not deployed: production and
    not, as the tenant has them).

    Versions whose probes would be the same inputs (the same envelopes on each side, the same
    environments and scope, and no fleet rule that reads the caller) are probed once, as a group;
    a version whose envelope, catalog and policy are the same on both sides is not probed. The
    distinct inputs are evaluated in ``workers`` forked processes when there are many (pass more
    than 1 only from a process that runs no other threads)."""
    per_version = base.reads_caller or head.reads_caller
    by_env = base.reads_environment_name or head.reads_environment_name
    same_policy = base.modules == head.modules
    left, right = _Cached(base, per_version, by_env), _Cached(head, per_version, by_env)
    flips = Flips()
    impact = Impact(flips)
    wanted = sorted(versions) if versions is not None else sorted(base.deployable() | head.deployable())
    tenant_flags: dict[str, list[tuple[str | None, bool]]] = {}
    same_catalog: dict[str, bool] = {}
    groups: dict[tuple[Any, ...], list[str]] = {}
    for tenant, version in wanted:
        key = (tenant, version)
        if key not in base.envelopes or key not in head.envelopes:
            continue  # new on the head (nothing runs it yet) or gone from it (retired)
        impact.versions += 1
        b_env, h_env = base.envelopes[key], head.envelopes[key]
        places = sorted(base.placements.get(key, frozenset()) | head.placements.get(key, frozenset()))
        where: tuple[tuple[str | None, bool], ...]
        if places:
            where = tuple((env, head.production.get((tenant, env), base.production.get((tenant, env), False))) for env in places)
        else:
            where = tuple(tenant_flags.get(tenant) or tenant_flags.setdefault(tenant, _unplaced(head, tenant)))
        same = same_catalog.get(tenant)
        if same is None:
            same = same_catalog[tenant] = base.tools.get(tenant, {}) == head.tools.get(tenant, {})
        b_key, h_key = base.envelope_key(b_env), head.envelope_key(h_env)
        if same_policy and same and b_key == h_key:
            tools = set(base.tools.get(tenant, {})) | set(head.tools.get(tenant, {}))
            impact.probes += len(tools) * (3 * len(where)) + sum(
                len(_declared(base.tools.get(tenant, {}).get(t))) * len(where) for t in tools
            )
            continue  # the same inputs on both sides: the same decisions
        template = head.templates.get(key) or base.templates.get(key, "")
        project = head.projects.get((tenant, template)) or base.projects.get((tenant, template))
        scope = f"{tenant}/{project}" if project else f"{tenant}/{template}"
        group = (tenant, version if per_version else None, template if per_version else None, b_key, h_key, where, scope)
        groups.setdefault(group, []).append(version)
    pairs: list[_Pair] = []
    for (tenant, _, _, b_key, h_key, where, scope), members in groups.items():
        _probe_group(base, head, left, right, impact, pairs, tenant, members, list(where), scope, same_policy and b_key == h_key)
    _run([left, right], workers)
    for (tenant, members, scope), tool, example, b, h in pairs:
        before, after = left.decision(b), right.decision(h)
        if before != after:
            for member in members:
                flips.add(
                    tool, before, after, scope, tenant, member,
                    {**example, "version": member} if member == example["version"] else example,
                )  # fmt: skip
    impact.evaluated = left.evaluated + right.evaluated
    for tenant in sorted(flips.widening_tenants()):
        rule = head.widening_rules.get(tenant)
        if rule:
            impact.governed.append({"tenant": tenant, **dict(rule)})
    return impact


#: A probe to compare once both sides are evaluated: (tenant, the group's versions, scope), the
#: tool, an example of the call, and the probe's key on each side.
_Pair = tuple[tuple[str, list[str], str], str, dict[str, Any], tuple[Any, ...], tuple[Any, ...]]


def _probe_group(
    base: Side,
    head: Side,
    left: _Cached,
    right: _Cached,
    impact: Impact,
    pairs: list[_Pair],
    tenant: str,
    members: list[str],
    where: list[tuple[str | None, bool]],
    scope: str,
    same_envelope: bool,
) -> None:
    """Queue the probes of one version of a group (what flips counts for each of its versions);
    with ``same_envelope`` (and the same policy) only the tools whose catalog entries differ."""
    version = members[0]
    b_env, h_env = base.envelopes[(tenant, version)], head.envelopes[(tenant, version)]
    b_tools, h_tools = base.tools.get(tenant, {}), head.tools.get(tenant, {})
    n = len(members)
    group = (tenant, members, scope)
    for tool in sorted(set(b_tools) | set(h_tools)):
        b_entry, h_entry = b_tools.get(tool), h_tools.get(tool)
        declared = _declared(b_entry, h_entry)
        impact.probes += n * len(where) * (3 + len(declared))
        if (same_envelope and b_entry == h_entry) or (_refused(b_env, tool, b_entry) and _refused(h_env, tool, h_entry)):
            continue  # the same input on both sides, or DENY on both whatever else: the same decision
        b_rank = risk.LEVELS.index(b_entry["risk"]) if b_entry else 2
        h_rank = risk.LEVELS.index(h_entry["risk"]) if h_entry else 2
        seen: set[tuple[int, int]] = set()
        for raises in range(3):
            levels = (min(b_rank + raises, 2), min(h_rank + raises, 2))
            if levels in seen:
                continue
            seen.add(levels)
            for environment, production in where:
                example: dict[str, Any] = {
                    "version": version, "environment": environment or _NOT_DEPLOYED, "risk": risk.LEVELS[levels[1]],
                }  # fmt: skip
                pairs.append(
                    (
                        group, tool, example,
                        left.key(tenant, version, environment, production, tool, raises),
                        right.key(tenant, version, environment, production, tool, raises),
                    )
                )  # fmt: skip
        for args in declared:
            for environment, production in where:
                example = {"version": version, "environment": environment or _NOT_DEPLOYED, "args": args[1]}
                pairs.append(
                    (
                        group, tool, example,
                        left.key(tenant, version, environment, production, tool, 0, args),
                        right.key(tenant, version, environment, production, tool, 0, args),
                    )
                )  # fmt: skip


def _declared(*entries: Mapping[str, Any] | None) -> list[tuple[bytes, dict[str, Any]]]:
    """The argument probes a catalog declares for a tool (``probes``) on either side, once each."""
    found: dict[bytes, dict[str, Any]] = {}
    for entry in entries:
        for args in (entry or {}).get("probes") or ():
            if isinstance(args, dict):
                found.setdefault(orjson.dumps(args, option=orjson.OPT_SORT_KEYS), args)
    return sorted(found.items())


def _refused(envelope: Mapping[str, Any], tool: str, entry: Mapping[str, Any] | None) -> bool:
    """Whether the library denies every call of ``tool`` under ``envelope`` whatever else the
    input says: not in the catalog, denied by the envelope, or outside its allow list
    (``policies/arm/decision.rego``: any deny reason is DENY, and fleet rules only add reasons)."""
    if entry is None:
        return True
    tools = envelope.get("tools") or {}
    allow = tools.get("allow")
    return tool in (tools.get("deny") or ()) or (allow is not None and tool not in allow)


def _unplaced(side: Side, tenant: str) -> list[tuple[str | None, bool]]:
    flags = sorted({flag for (t, _), flag in side.production.items() if t == tenant}) or [False]
    return [(None, flag) for flag in flags]


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a is b:
        return True
    strip = lambda e: {k: v for k, v in e.items() if k != "sources"}  # noqa: E731  # names only
    return strip(a) == strip(b)
