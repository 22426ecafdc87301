"""Cross-document checks of a commit: dangling references, lineage cycles, clashes.

Pure: works on the objects ``loading`` built (their document summaries, no models) and returns
every problem found, each located at the manifest holding the broken reference. Schema checks of
single documents happen earlier, in ``parsing``; genome hashes are checked in ``loading``, which
knows the prompt files; duplicate names are found while objects are built. :func:`warnings` finds
what is valid but does not do what its author may think (fields that are ignored).
"""

from __future__ import annotations

from collections import defaultdict

from reconciler import errors
from reconciler.desired import snapshot

__all__ = ["check_references", "warnings"]

#: Why ``spec.evaluations`` is ignored, said wherever a manifest still states it.
IGNORED_EVALUATIONS = (
    "ignored: a manifest's evaluation results are not evidence; gates read the runs recorded for the version's "
    "genome hash (POST /v1/evaluations, armctl eval submit) against the EvaluationSuites that apply to its template"
)

Object = snapshot.Object


def check_references(objects: dict[snapshot.Key, Object], invalid: set[tuple[str, str]] | None = None) -> list[errors.Problem]:
    """Every broken reference; ``invalid`` names (kind, name) documents that failed their schema,
    which are not reported again through the references to them."""
    invalid = invalid or set()
    problems: list[errors.Problem] = []
    tools: dict[str, dict[str, Object]] = defaultdict(dict)  # tenant → tool name → catalog
    for obj in objects.values():
        if obj.kind != "ToolCatalog":
            continue
        for i, name in enumerate(obj.doc.tools):
            first = tools[obj.tenant].get(name)
            if first is not None:
                problems.append(
                    obj.origin.problem(
                        f"spec.tools[{i}].name",
                        f"tool {name!r} is declared twice (also in ToolCatalog {first.name!r} at {first.origin})",
                    )
                )
            else:
                tools[obj.tenant][name] = obj

    emails: dict[tuple[str, str], Object] = {}
    for obj in objects.values():
        doc = obj.doc
        for field, kind, name in doc.refs:
            if kind == "Tool":
                if name not in tools[obj.tenant]:
                    problems.append(
                        obj.origin.problem(field, f"tool {name!r} is not in the tool catalog of tenant {obj.tenant!r}")
                    )
            elif (kind, obj.tenant, name) not in objects and (kind, name) not in invalid:
                problems.append(obj.origin.problem(field, f"{kind} {name!r} does not exist in tenant {obj.tenant!r}"))
        if obj.kind == "Operator" and doc.email:
            first = emails.setdefault((obj.tenant, doc.email), obj)
            if first is not obj:
                problems.append(
                    obj.origin.problem(
                        "spec.email", f"email {doc.email!r} is already used by Operator {first.name!r} at {first.origin}"
                    )
                )
        elif obj.kind == "AgentVersion":
            problems.extend(_version_problems(obj, objects, invalid))
        elif obj.kind == "Deployment" and doc.version is not None:
            version = objects.get(("AgentVersion", obj.tenant, doc.version))
            if version is None and ("AgentVersion", doc.version) in invalid:
                pass
            elif version is None:
                problems.append(
                    obj.origin.problem("spec.version", f"AgentVersion {doc.version!r} does not exist in tenant {obj.tenant!r}")
                )
            elif ("AgentTemplate", obj.tenant, doc.template) in objects and version.doc.template != doc.template:
                problems.append(
                    obj.origin.problem(
                        "spec.version",
                        f"version {doc.version!r} belongs to template {version.doc.template!r}, not {doc.template!r}",
                    )
                )
    problems.extend(_lineage_cycles(objects))
    return problems


def _version_problems(obj: Object, objects: dict[snapshot.Key, Object], invalid: set[tuple[str, str]]) -> list[errors.Problem]:
    doc = obj.doc
    problems = []
    if not obj.name.startswith(f"{doc.template}@") or obj.name == f"{doc.template}@":
        problems.append(
            obj.origin.problem(
                "metadata.name", f"a version of template {doc.template!r} must be named '{doc.template}@<version>'"
            )
        )
    if doc.parent is not None:
        parent = objects.get(("AgentVersion", obj.tenant, doc.parent))
        if parent is None and ("AgentVersion", doc.parent) in invalid:
            pass
        elif parent is None:
            problems.append(
                obj.origin.problem("spec.parent", f"parent version {doc.parent!r} does not exist in tenant {obj.tenant!r}")
            )
        elif parent.doc.template != doc.template:
            problems.append(
                obj.origin.problem(
                    "spec.parent",
                    f"parent version {doc.parent!r} belongs to template {parent.doc.template!r}, not {doc.template!r}",
                )
            )
    return problems


def _lineage_cycles(objects: dict[snapshot.Key, Object]) -> list[errors.Problem]:
    """Each parent chain must end; a cycle is reported once, at its lexically first version."""
    problems: list[errors.Problem] = []
    state: dict[snapshot.Key, int] = {}  # 1 = on the current walk, 2 = known to end
    for start in objects.values():
        if start.kind != "AgentVersion" or start.key in state:
            continue
        path: list[snapshot.Key] = []
        key: snapshot.Key | None = start.key
        while key is not None and key in objects and state.get(key) != 2:
            if state.get(key) == 1:
                cycle = path[path.index(key) :]
                first = min(cycle)
                at = cycle.index(first)
                names = [k[2] for k in cycle[at:] + cycle[:at]] + [first[2]]
                problems.append(objects[first].origin.problem("spec.parent", "lineage cycle: " + " -> ".join(names)))
                break
            state[key] = 1
            path.append(key)
            parent = objects[key].doc.parent
            key = ("AgentVersion", key[1], parent) if parent else None
        for k in path:
            state[k] = 2
    return problems


def warnings(objects: dict[snapshot.Key, Object]) -> list[errors.Problem]:
    """What is valid but has no effect: evaluation results stated in a version's manifest."""
    return [
        obj.origin.problem("spec.evaluations", IGNORED_EVALUATIONS)
        for obj in objects.values()
        if obj.kind == "AgentVersion" and obj.doc.facts and obj.doc.facts.get("declaredEvaluations")
    ]
