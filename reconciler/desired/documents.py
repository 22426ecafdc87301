"""Document summaries: what the checks and the planner need of a manifest, small and cacheable.

Parsing a document yields a :class:`Document`: its kind, name and declared tenant, a digest of
its content (for change detection), the references it makes to other objects, and for versions
the genome in canonical form with prompt files still to be filled in. Summaries are what the
parse cache stores (keyed by blob SHA), so a warm load builds no pydantic models at all; the full
model is materialised only for objects that are actually needed (``snapshot.Snapshot.manifest``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from reconciler import errors
from reconciler.desired import genome

if TYPE_CHECKING:
    from reconciler.desired import models

__all__ = ["Document", "ParsedFile", "Ref", "summarize"]


#: A reference from a document to another object: (field where it is written, kind, name).
#: The kind is a manifest kind, or "Tool" for a catalog entry. A plain tuple: thousands are
#: unpickled on every warm load.
Ref = tuple[str, str, str]


def _ref(field: str, kind: str, name: str) -> Ref:
    return (field, kind, name)


class Document(NamedTuple):
    number: int  # 0-based index of the document in its file
    line: int
    kind: str
    name: str
    tenant: str | None
    digest: str  # sha256 of the document's data, keys sorted: equal digests, equal documents
    refs: tuple[Ref, ...] = ()
    template: str | None = None  # AgentVersion / Deployment: the template
    parent: str | None = None  # AgentVersion
    version: str | None = None  # Deployment: the target version
    email: str | None = None  # Operator
    tools: tuple[str, ...] = ()  # ToolCatalog: the tools it declares
    prompts: tuple[str, ...] = ()  # AgentVersion: prompt files as written
    genome_template: tuple[str, ...] | None = None  # AgentVersion: canonical genome, prompts as placeholders
    stated_hash: str | None = None  # AgentVersion: spec.genomeHash when stated
    lifecycle: str | None = None  # AgentVersion: the desired lifecycle state
    #: Kind-specific values the planner reads, defaults filled in, as plain data (so planning
    #: never has to build models): Environment admission, Role permissions, AgentTemplate labels,
    #: EvaluationSuite spec (``suite_facts``), AgentVersion: how many ``spec.evaluations`` it
    #: states (ignored: a warning), PolicyEnvelope spec, Deployment replicas and strategy.
    facts: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Through a function, not the class: the parse cache's unpickler admits no class (see
        # caching._Unpickler). The function uses the C tuple constructor, not the generated
        # Python __new__: a warm load unpickles one Document per manifest document.
        return (_new_document, (tuple(self),))


def _new_document(fields: tuple[Any, ...]) -> Document:
    return tuple.__new__(Document, fields)


def digest_of(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


def summarize(index: int, line: int, manifest: Any, data: dict[str, Any]) -> Document:
    """The summary of one schema-valid document (``manifest`` is its model)."""
    meta = manifest.metadata
    base = Document(index, line, manifest.kind, meta.name, meta.tenant, digest_of(data))
    spec = manifest.spec
    kind = manifest.kind
    if kind == "Environment":
        admission = spec.admission
        facts = {
            "minLifecycle": admission.minLifecycle.value,
            "requireApproval": admission.requireApproval,
            "requiredApprovals": admission.requiredApprovals,
            "approverRoles": list(admission.approverRoles),
            "activation": spec.activation,
            "production": spec.production,
        }
        return base._replace(refs=_roles("spec.admission.approverRoles", admission.approverRoles), facts=facts)
    if kind == "Role":
        return base._replace(facts={"permissions": list(spec.permissions)})
    if kind == "Operator":
        return base._replace(refs=_roles("spec.roles", spec.roles), email=spec.email.lower())
    if kind == "ToolCatalog":
        return base._replace(tools=tuple(t.name for t in spec.tools))
    if kind == "AgentTemplate":
        return base._replace(refs=(_ref("spec.project", "Project", spec.project),), facts={"labels": dict(meta.labels)})
    if kind == "EvaluationSuite":
        refs = [_ref(f"spec.appliesTo.templates[{i}]", "AgentTemplate", t) for i, t in enumerate(spec.appliesTo.templates or ())]
        refs.extend(
            _ref(f"spec.requiredFor.environments[{i}]", "Environment", e) for i, e in enumerate(spec.requiredFor.environments)
        )
        return base._replace(refs=tuple(refs), facts=suite_facts(spec))
    if kind == "AgentVersion":
        return _version(base, spec)
    if kind == "PolicyEnvelope":
        refs = [_ref("spec.scope.name", spec.scope.kind, spec.scope.name)]
        for field, names in (
            ("spec.tools.allow", spec.tools.allow or ()),
            ("spec.tools.deny", spec.tools.deny),
            ("spec.tools.requireApproval", spec.tools.requireApproval),
        ):
            refs.extend(_ref(f"{field}[{i}]", "Tool", n) for i, n in enumerate(names))
        refs.extend(_roles("spec.approvals.approverRoles", spec.approvals.approverRoles or ()))
        refs.extend(_roles("spec.approvals.escalateTo", spec.approvals.escalateTo or ()))
        return base._replace(refs=tuple(refs), facts=spec.model_dump(mode="json"))
    if kind == "Deployment":
        return base._replace(
            refs=(
                _ref("spec.template", "AgentTemplate", spec.template),
                _ref("spec.environment", "Environment", spec.environment),
            ),
            template=spec.template,
            version=spec.version,
            facts={"environment": spec.environment, "replicas": spec.replicas, "strategy": spec.strategy.model_dump(mode="json")},
        )
    if kind == "NotificationChannel":
        channel_refs = tuple(_ref(f"spec.environments[{i}]", "Environment", e) for i, e in enumerate(spec.environments or ()))
        return base._replace(refs=channel_refs, facts=spec.model_dump(mode="json"))
    return base


def _roles(field: str, roles: tuple[str, ...]) -> tuple[Ref, ...]:
    return tuple(_ref(f"{field}[{i}]", "Role", r) for i, r in enumerate(roles))


def _version(base: Document, spec: models.AgentVersionSpec) -> Document:
    refs = [_ref("spec.template", "AgentTemplate", spec.template)]
    refs.extend(_ref(f"spec.genome.tools[{i}]", "Tool", g.name) for i, g in enumerate(spec.genome.tools))
    prompts = tuple(p.file for p in spec.genome.prompts)
    return base._replace(
        refs=tuple(refs),
        template=spec.template,
        parent=spec.parent,
        prompts=prompts,
        genome_template=genome.genome_template(spec.genome),
        stated_hash=spec.genomeHash,
        lifecycle=spec.lifecycle.value,
        facts={"declaredEvaluations": len(spec.evaluations)},
    )


def suite_facts(spec: models.EvaluationSuiteSpec) -> dict[str, Any]:
    """An EvaluationSuite's spec as plain data, defaults filled in and each metric's unit
    resolved: what ``evidence.judging`` judges runs against, from a commit or from the store."""
    return {
        "category": spec.category,
        "metrics": [
            {
                "name": m.name,
                "threshold": m.threshold,
                "direction": m.direction,
                "significance": m.significance,
                "unit": m.kind,
            }
            for m in spec.metrics
        ],
        "minSamples": spec.minSamples,
        "maxRegression": spec.maxRegression if spec.maxRegression is not None else 0.0,
        "appliesTo": {
            "templates": list(spec.appliesTo.templates) if spec.appliesTo.templates is not None else None,
            "labels": dict(spec.appliesTo.selector.labels) if spec.appliesTo.selector is not None else None,
        },
        "requiredFor": {"steps": list(spec.requiredFor.steps), "environments": list(spec.requiredFor.environments)},
        "onFailure": spec.onFailure,
    }


@dataclasses.dataclass(frozen=True)
class ParsedFile:
    documents: tuple[Document, ...]
    problems: tuple[errors.Problem, ...]
    #: (kind, name) of documents that failed their schema: references to them are not reported
    #: again as dangling, the document's own problems already say what is wrong.
    invalid: tuple[tuple[str, str], ...] = ()
    #: document index → the document's data as JSON (not in the summaries the cache keeps: a
    #: load that needs it again reads the cache's documents entry, or parses the file again)
    raw: dict[int, bytes] = dataclasses.field(default_factory=dict, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_new_parsed_file, (self.documents, self.problems, self.invalid, self.raw))

    def cacheable(self) -> ParsedFile:
        """What the parse cache keeps: summaries without data or genome templates (size)."""
        docs = tuple(d._replace(genome_template=None) if d.genome_template else d for d in self.documents)
        return ParsedFile(docs, self.problems, self.invalid)


def _new_parsed_file(
    documents: tuple[Document, ...],
    problems: tuple[errors.Problem, ...],
    invalid: tuple[tuple[str, str], ...],
    raw: dict[int, bytes],
) -> ParsedFile:
    return ParsedFile(documents, problems, invalid, raw)
