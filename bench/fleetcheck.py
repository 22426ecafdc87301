"""Fleet check: validates a generated benchmark fleet against the real manifest models.

``bench/fleetgen.py`` writes YAML with its own fast emitter and knows the schema only by
convention; this module is the proof that what it wrote is a fleet the reconciler accepts. It
reads every document from a commit tree (not the working copy, so it checks what was
committed), validates it with ``reconciler.desired.models.KINDS[kind]`` and then checks the
references between documents: template → project, version → template and parent of the same
template, tool grants → catalog, prompt files → blobs next to the manifest, envelope scopes,
deployment → template, environment and an admitted version of that template, roles.

It is a benchmark aid, not the reconciler's own checker (``reconciler.spec`` owns that).
Usage: ``python bench/fleetcheck.py REPO_DIR [REV]``; exits 1 and lists problems when any.
"""

from __future__ import annotations

import collections
import pathlib
import posixpath
import sys
from collections.abc import Sequence
from typing import Any

import git
import yaml

try:
    from reconciler.desired import models
except ImportError:  # run as ``python bench/fleetcheck.py``: the repository root is not on sys.path
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from reconciler.desired import models

__all__ = ["check"]

ORDER = [state.value for state in models.VersionState]


def check(repo_dir: pathlib.Path, rev: str = "HEAD") -> tuple[collections.Counter[str], list[str]]:
    """Validate every manifest at ``rev``; return (documents per kind, problems)."""
    commit = git.Repo(repo_dir).commit(rev)
    problems: list[str] = []
    blobs = {str(item.path): item for item in commit.tree.traverse() if isinstance(item, git.Blob)}
    objects: dict[tuple[str, str], tuple[str, Any]] = {}
    for path in sorted(p for p in blobs if p.endswith((".yaml", ".yml"))):
        for number, raw in enumerate(yaml.load_all(blobs[path].data_stream.read(), Loader=yaml.CSafeLoader)):
            where = f"{path}#{number}"
            try:
                document = models.KINDS[raw["kind"]].model_validate(raw)
            except (KeyError, TypeError, ValueError) as exc:  # pydantic.ValidationError is a ValueError
                problems.append(f"{where}: {exc}")
                continue
            key = (raw["kind"], document.metadata.name)
            if key in objects:
                problems.append(f"{where}: duplicate {key[0]} {key[1]} (first in {objects[key][0]})")
            objects[key] = (path, document)

    def names(kind: str) -> set[str]:
        return {name for (k, name) in objects if k == kind}

    def need(where: str, kind: str, name: str) -> None:
        if (kind, name) not in objects:
            problems.append(f"{where}: unknown {kind} {name!r}")

    tenants = names("Tenant")
    if len(tenants) != 1:
        problems.append(f"expected one Tenant, found {sorted(tenants)}")
    catalog = {tool.name for _, (_, doc) in objects.items() if doc.kind == "ToolCatalog" for tool in doc.spec.tools}
    # A fleet with EvaluationSuites promotes by recorded runs; one without shows its old evidence.
    has_suites = any(kind == "EvaluationSuite" for kind, _ in objects)
    for (kind, name), (path, doc) in objects.items():
        where = f"{path}: {kind} {name}"
        if doc.metadata.tenant not in (None, *tenants):
            problems.append(f"{where}: unknown tenant {doc.metadata.tenant}")
        spec = doc.spec
        if kind == "Operator":
            for role in spec.roles:
                need(where, "Role", role)
        elif kind == "Environment":
            for role in spec.admission.approverRoles:
                need(where, "Role", role)
        elif kind == "AgentTemplate":
            need(where, "Project", spec.project)
        elif kind == "AgentVersion":
            need(where, "AgentTemplate", spec.template)
            if not name.startswith(spec.template + "@"):
                problems.append(f"{where}: name does not start with {spec.template}@")
            if spec.parent is not None:
                need(where, "AgentVersion", spec.parent)
                if not spec.parent.startswith(spec.template + "@"):
                    problems.append(f"{where}: parent {spec.parent} is of another template")
            for grant in spec.genome.tools:
                if grant.name not in catalog:
                    problems.append(f"{where}: tool {grant.name} is not in the catalog")
            for prompt in spec.genome.prompts:
                if posixpath.normpath(posixpath.join(posixpath.dirname(path), prompt.file)) not in blobs:
                    problems.append(f"{where}: prompt file {prompt.file} missing")
            if not has_suites and ORDER.index(spec.lifecycle.value) >= ORDER.index("CANDIDATE") and not spec.evaluations:
                problems.append(f"{where}: {spec.lifecycle.value} without evaluations")
        elif kind == "EvaluationSuite":
            for template in spec.appliesTo.templates or ():
                need(where, "AgentTemplate", template)
            for environment in spec.requiredFor.environments:
                need(where, "Environment", environment)
        elif kind == "PolicyEnvelope":
            need(where, spec.scope.kind, spec.scope.name)
            for tool in (*(spec.tools.allow or ()), *spec.tools.deny, *spec.tools.requireApproval):
                if tool not in catalog:
                    problems.append(f"{where}: tool {tool} is not in the catalog")
            for role in spec.approvals.approverRoles or ():
                need(where, "Role", role)
        elif kind == "Deployment":
            need(where, "AgentTemplate", spec.template)
            need(where, "Environment", spec.environment)
            need(where, "AgentVersion", spec.version)
            version = objects.get(("AgentVersion", spec.version))
            environment = objects.get(("Environment", spec.environment))
            if version and version[1].spec.template != spec.template:
                problems.append(f"{where}: version {spec.version} is of another template")
            if version and environment:
                lifecycle, minimum = version[1].spec.lifecycle.value, environment[1].spec.admission.minLifecycle.value
                if not ORDER.index(minimum) <= ORDER.index(lifecycle) < ORDER.index("DEPRECATED"):
                    problems.append(f"{where}: {spec.environment} does not admit {lifecycle} version {spec.version}")

    # Every parent chain must end at a root without looping.
    parents = {name: doc.spec.parent for (kind, name), (_, doc) in objects.items() if kind == "AgentVersion"}
    for start in parents:
        seen: set[str] = set()
        current: str | None = start
        while current is not None and current not in seen:
            seen.add(current)
            current = parents.get(current)
        if current is not None:
            problems.append(f"AgentVersion {start}: parent chain loops at {current}")
    return collections.Counter(kind for kind, _ in objects), problems


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: fleetcheck.py REPO_DIR [REV]", file=sys.stderr)
        return 2
    counts, problems = check(pathlib.Path(args[0]), *args[1:])
    print(", ".join(f"{count} {kind}" for kind, count in sorted(counts.items())))
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
