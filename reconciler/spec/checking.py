"""Cross-document checks of a commit: duplicates, dangling references, lineage cycles.

Pure: takes the objects ``loading`` built and returns every problem found, each located at the
manifest that holds the broken reference. Schema checks of single documents happen earlier, in
``parsing``; genome hashes are checked in ``loading``, which knows the prompt files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from reconciler import errors
from reconciler.spec import snapshot

__all__ = ["check_references"]

Object = snapshot.Object


def check_references(objects: dict[snapshot.Key, Object]) -> list[errors.Problem]:
    problems: list[errors.Problem] = []
    index: dict[snapshot.Key, Object] = objects
    tools: dict[str, set[str]] = defaultdict(set)  # tenant → tool names in its catalogs
    tool_origin: dict[tuple[str, str], Object] = {}

    def exists(kind: str, tenant: str, name: str) -> bool:
        return (kind, tenant, name) in index

    def need(obj: Object, field: str, kind: str, name: str | None, what: str | None = None) -> bool:
        if name is None or exists(kind, obj.tenant, name):
            return True
        problems.append(obj.origin.problem(field, f"{what or kind} {name!r} does not exist in tenant {obj.tenant!r}"))
        return False

    for obj in index.values():
        if obj.kind == "ToolCatalog":
            for i, tool in enumerate(obj.spec.tools):
                first = tool_origin.get((obj.tenant, tool.name))
                if first is not None:
                    problems.append(
                        obj.origin.problem(
                            f"spec.tools[{i}].name",
                            f"tool {tool.name!r} is declared twice (also in ToolCatalog {first.name!r} at {first.origin})",
                        )
                    )
                    continue
                tool_origin[(obj.tenant, tool.name)] = obj
                tools[obj.tenant].add(tool.name)

    def need_tools(obj: Object, field: str, names: Iterable[str]) -> None:
        for i, name in enumerate(names):
            if name not in tools[obj.tenant]:
                problems.append(
                    obj.origin.problem(f"{field}[{i}]", f"tool {name!r} is not in the tool catalog of tenant {obj.tenant!r}")
                )

    emails: dict[tuple[str, str], Object] = {}
    for obj in index.values():
        spec = obj.spec
        if obj.kind == "Project":
            pass
        elif obj.kind == "Environment":
            _need_roles(obj, "spec.admission.approverRoles", spec.admission.approverRoles, exists, problems)
        elif obj.kind == "Operator":
            _need_roles(obj, "spec.roles", spec.roles, exists, problems)
            first = emails.get((obj.tenant, spec.email.lower()))
            if first is not None:
                problems.append(
                    obj.origin.problem(
                        "spec.email", f"email {spec.email!r} is already used by Operator {first.name!r} at {first.origin}"
                    )
                )
            else:
                emails[(obj.tenant, spec.email.lower())] = obj
        elif obj.kind == "AgentTemplate":
            need(obj, "spec.project", "Project", spec.project)
        elif obj.kind == "AgentVersion":
            if not obj.name.startswith(spec.template + "@") or obj.name == spec.template + "@":
                problems.append(
                    obj.origin.problem(
                        "metadata.name", f"a version of template {spec.template!r} must be named '{spec.template}@<version>'"
                    )
                )
            need(obj, "spec.template", "AgentTemplate", spec.template)
            if spec.parent is not None:
                parent = index.get(("AgentVersion", obj.tenant, spec.parent))
                if parent is None:
                    problems.append(
                        obj.origin.problem(
                            "spec.parent", f"parent version {spec.parent!r} does not exist in tenant {obj.tenant!r}"
                        )
                    )
                elif parent.spec.template != spec.template:
                    problems.append(
                        obj.origin.problem(
                            "spec.parent",
                            f"parent version {spec.parent!r} belongs to template {parent.spec.template!r}, not {spec.template!r}",
                        )
                    )
            need_tools(obj, "spec.genome.tools", [g.name for g in spec.genome.tools])
        elif obj.kind == "PolicyEnvelope":
            need(obj, "spec.scope.name", spec.scope.kind, spec.scope.name)
            need_tools(obj, "spec.tools.allow", spec.tools.allow or ())
            need_tools(obj, "spec.tools.deny", spec.tools.deny)
            need_tools(obj, "spec.tools.requireApproval", spec.tools.requireApproval)
            _need_roles(obj, "spec.approvals.approverRoles", spec.approvals.approverRoles or (), exists, problems)
        elif obj.kind == "Deployment":
            template_ok = need(obj, "spec.template", "AgentTemplate", spec.template)
            need(obj, "spec.environment", "Environment", spec.environment)
            version = index.get(("AgentVersion", obj.tenant, spec.version))
            if version is None:
                problems.append(
                    obj.origin.problem("spec.version", f"AgentVersion {spec.version!r} does not exist in tenant {obj.tenant!r}")
                )
            elif template_ok and version.spec.template != spec.template:
                problems.append(
                    obj.origin.problem(
                        "spec.version",
                        f"version {spec.version!r} belongs to template {version.spec.template!r}, not {spec.template!r}",
                    )
                )
    problems.extend(_lineage_cycles(index))
    return problems


def _need_roles(obj: Object, field: str, roles: Iterable[str], exists, problems: list[errors.Problem]) -> None:  # type: ignore[no-untyped-def]
    for i, role in enumerate(roles):
        if not exists("Role", obj.tenant, role):
            problems.append(obj.origin.problem(f"{field}[{i}]", f"Role {role!r} does not exist in tenant {obj.tenant!r}"))


def _lineage_cycles(index: dict[snapshot.Key, Object]) -> list[errors.Problem]:
    """Each parent chain must end; a cycle is reported once, at its lexically first version."""
    problems: list[errors.Problem] = []
    state: dict[snapshot.Key, int] = {}  # 1 = on the current walk, 2 = known to end
    for start in index.values():
        if start.kind != "AgentVersion" or state.get(start.key) == 2:
            continue
        path: list[snapshot.Key] = []
        key: snapshot.Key | None = start.key
        while key is not None and key in index and state.get(key) != 2:
            if state.get(key) == 1:
                cycle = path[path.index(key) :]
                first = min(cycle)
                names = [k[2] for k in cycle[cycle.index(first) :] + cycle[: cycle.index(first)]] + [first[2]]
                problems.append(index[first].origin.problem("spec.parent", "lineage cycle: " + " -> ".join(names)))
                break
            state[key] = 1
            path.append(key)
            parent = index[key].spec.parent
            key = ("AgentVersion", key[1], parent) if parent else None
        for k in path:
            state[k] = 2
    return problems
